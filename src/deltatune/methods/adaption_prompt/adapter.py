"""LLaMA-Adapter's adaption prompt on a transformers attention module.

Zhang et al., "LLaMA-Adapter: Efficient Fine-tuning of Language Models with Zero-init Attention"
(2023, arXiv:2303.16199).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from deltatune import targeting, weights
from deltatune.errors import ConfigError, DeltatuneError, MergeError, TargetError, UnsupportedLayerError
from deltatune.integrations import transformers as hf
from deltatune.layer import Adapter
from deltatune.methods.adaption_prompt.config import AdaptionPromptConfig

# Model types (config.model_type) -> the attention module's attribute name (PEFT's default target).
MODEL_TYPES = {"llama": "self_attn", "mistral": "self_attn", "gpt2": "attn"}
LAYER_TYPES = ("LlamaAttention", "MistralAttention", "GPT2Attention")
_FIX = "use a Llama, Mistral or GPT-2 model, or another method for this model (e.g. LoRA, or prefix tuning)"


class AdaptionPromptAdapter(Adapter):
    """A gated prompt that one attention layer attends to, beside its normal attention.

    Zero-init attention: ``h' = h + g * softmax(q k^T / sqrt(head_dim)) v`` (then the layer's output
    projection, where the model has one after the heads), with ``h`` the layer's own output, ``q`` the
    layer's queries for its input, ``k``/``v`` the layer's key/value projections of the prompt ``P``,
    and no mask: every position sees every prompt token. ``P`` is ``adaption_prompt``
    (1, adapter_len, hidden), drawn from N(0, 1); ``g`` is ``adaption_gate`` (1,), zero at init, so
    the model starts as the base model. The attention over the prompt runs in the adapter dtype
    (fp32). It cannot be merged: it adds attention over extra tokens, not a weight change.
    Subclasses compute ``q``, ``k``, ``v`` and the output for one attention type.
    """

    needs_call_args = True
    merges_module = True  # so that merging reaches merge_module's clear error before any weight is read

    def __init__(
        self, adapter_len: int, hidden: int, heads: int, kv_heads: int, head_dim: int, like: nn.Module
    ) -> None:
        super().__init__()
        self.adapter_len, self.num_heads, self.num_kv_heads, self.head_dim = adapter_len, heads, kv_heads, head_dim
        dtype = weights.adapter_dtype(like)
        with torch.device(weights.module_device(like)):
            # N(0, 1) prompt tokens (the paper's embedding init), zero gate: the "zero-init attention".
            self.adaption_prompt = nn.Parameter(torch.randn(1, adapter_len, hidden, dtype=dtype))
            self.adaption_gate = nn.Parameter(torch.zeros(1, dtype=dtype))

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        inner: Callable[[torch.Tensor], Any],
        base: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        out = inner(x)
        attn = out[0] if isinstance(out, tuple) else out
        delta = self.prompt_output(x, base, args, kwargs)
        if isinstance(out, tuple):
            return (attn + delta, *out[1:])
        return attn + delta

    def prompt_output(self, x: torch.Tensor, base: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``g * softmax(q k^T / sqrt(d)) v`` in the adapter dtype, heads joined: (batch, seq, heads * head_dim).

        q: (batch, heads, seq, head_dim); k, v: (1, kv_heads, adapter_len, head_dim), shared by the batch.
        """
        if self.num_kv_heads != self.num_heads:  # grouped-query attention: each key/value head serves a group
            k = k.repeat_interleave(self.num_heads // self.num_kv_heads, dim=1)
            v = v.repeat_interleave(self.num_heads // self.num_kv_heads, dim=1)
        dtype = self.adaption_gate.dtype
        v = v.to(dtype) * self.adaption_gate  # the gate on the smallest tensor: g * (A v) = A (g v)
        # Scores as (batch, heads, adapter_len, seq), the softmax over dim -2: CPU kernels are several
        # times faster there than over a short last dimension (adapter_len ~ 10), forward and backward.
        k = k.to(dtype) * (1.0 / math.sqrt(self.head_dim))
        probs = torch.matmul(k, q.to(dtype).transpose(-1, -2)).softmax(dim=-2)
        mixed = torch.matmul(probs.transpose(-1, -2), v)  # (batch, heads, seq, head_dim)
        batch, seq = q.shape[0], q.shape[2]
        return mixed.transpose(1, 2).reshape(batch, seq, self.num_heads * self.head_dim)

    def merge_module(self, base: nn.Module, safe: bool = False) -> None:
        raise MergeError(
            "An adaption prompt cannot be merged: it adds attention over learned prompt tokens, which no "
            "weight of the model can express. Keep the adapter unmerged (or unload() it to drop it)."
        )

    def extra_repr(self) -> str:
        return f"adapter_len={self.adapter_len}, heads={self.num_heads}, kv_heads={self.num_kv_heads}"


class LlamaAdaptionPrompt(AdaptionPromptAdapter):
    """The adaption prompt on a Llama / Mistral attention (Zhang et al. 2023, as PEFT computes it).

    ``q = RoPE(q_proj(x))`` at the queries' own positions (the ``position_embeddings`` the model
    passes, so a KV cache's offset is included); ``k = k_proj(P)``, ``v = v_proj(P)`` without rotation,
    key/value heads repeated for grouped-query attention; the output goes through ``o_proj``:
    ``h' = h + o_proj(g * softmax(q k^T / sqrt(head_dim)) v)``. ``o_proj``'s bias, if any, is added
    a second time there, as PEFT does. Shapes: x (batch, seq, hidden), P (1, adapter_len, hidden),
    g (1,), q (batch, heads, seq, head_dim), k and v (1, kv_heads, adapter_len, head_dim).
    """

    def __init__(self, base: Any, adapter_len: int) -> None:  # a transformers attention module
        config = base.config
        heads = int(config.num_attention_heads)
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        super().__init__(adapter_len, int(config.hidden_size), heads, kv_heads, int(base.head_dim), base.q_proj)

    def prompt_output(self, x: torch.Tensor, base: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        batch, seq = x.shape[0], x.shape[1]
        cos, sin = _position_embeddings(base, args, kwargs)
        q = base.q_proj(x).view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)
        q = q * cos.unsqueeze(1) + _rotate_half(q) * sin.unsqueeze(1)
        prompt = self.adaption_prompt.to(x.dtype)
        k = base.k_proj(prompt).view(1, self.adapter_len, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = base.v_proj(prompt).view(1, self.adapter_len, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return base.o_proj(self.attend(q, k, v).to(x.dtype))


class GPT2AdaptionPrompt(AdaptionPromptAdapter):
    """The adaption prompt on a GPT-2 attention (as PEFT computes it).

    ``q, k, v`` come from the fused ``c_attn`` (bias included): ``q`` from ``c_attn(x)``, ``k`` and
    ``v`` from ``c_attn(P)``; GPT-2 has absolute positions, so nothing is rotated. The result is
    added to the layer's output after its ``c_proj`` without a projection of its own:
    ``h' = h + g * softmax(q k^T / sqrt(head_dim)) v``. Shapes: x (batch, seq, hidden),
    P (1, adapter_len, hidden), g (1,), q (batch, heads, seq, head_dim), k and v (1, heads, adapter_len, head_dim).
    """

    def __init__(self, base: Any, adapter_len: int) -> None:  # a GPT2Attention
        heads = int(base.num_heads)
        super().__init__(adapter_len, int(base.embed_dim), heads, heads, int(base.head_dim), base.c_attn)

    def prompt_output(self, x: torch.Tensor, base: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        if kwargs.get("encoder_hidden_states") is not None:
            raise DeltatuneError("The adaption prompt does not support GPT-2 cross-attention (encoder_hidden_states).")
        batch, seq, hidden = x.shape
        q = base.c_attn(x)[..., :hidden].view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)
        _, k, v = base.c_attn(self.adaption_prompt.to(x.dtype)).split(hidden, dim=2)
        k = k.view(1, self.adapter_len, self.num_heads, self.head_dim).transpose(1, 2)
        v = v.view(1, self.adapter_len, self.num_heads, self.head_dim).transpose(1, 2)
        return self.attend(q, k, v).to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    """RoPE's rotation of the two halves of the last dimension: (a, b) -> (-b, a)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _position_embeddings(
    base: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (cos, sin) the model passed to the attention: the queries' positions, cache included."""
    found = kwargs.get("position_embeddings", args[0] if args else None)
    if not isinstance(found, (tuple, list)) or len(found) != 2:
        raise DeltatuneError(
            f"{type(base).__name__} was called without position_embeddings=(cos, sin); the adaption prompt "
            "needs the rotary embeddings the model passes to its attention layers (transformers >= 4.48)."
        )
    return found[0], found[1]


_ADAPTERS: dict[str, type[LlamaAdaptionPrompt] | type[GPT2AdaptionPrompt]] = {
    "LlamaAttention": LlamaAdaptionPrompt,
    "MistralAttention": LlamaAdaptionPrompt,
    "GPT2Attention": GPT2AdaptionPrompt,
}


def supports_adaption_prompt(module: nn.Module) -> bool:
    return type(module).__name__ in _ADAPTERS and not getattr(module, "is_cross_attention", False)


def create_adaption_prompt(base: nn.Module, name: str, config: AdaptionPromptConfig) -> AdaptionPromptAdapter:
    """The adapter for the attention module ``base`` (the module ``name`` of the model)."""
    if not supports_adaption_prompt(base):
        raise UnsupportedLayerError(
            f"The adaption prompt cannot adapt {name} ({type(base).__name__}); it adapts self-attention modules "
            f"of type {', '.join(LAYER_TYPES)}. Set target_modules to the attention module's name, or {_FIX}."
        )
    assert config.adapter_len is not None  # checked by the config
    return _ADAPTERS[type(base).__name__](base, config.adapter_len)


def select_targets(model: nn.Module, config: AdaptionPromptConfig) -> list[str]:
    """PEFT's rule: the modules named ``<...>.<target_modules>``, the last ``adapter_layers`` of them.

    ``target_modules=None`` becomes the model type's attention name, as PEFT writes it.
    """
    kind = hf.model_type(model)
    if kind not in MODEL_TYPES:
        what = f"model type {kind!r}" if kind else f"{type(model).__name__} (no config.model_type)"
        raise UnsupportedLayerError(
            f"The adaption prompt supports transformers model types {list(MODEL_TYPES)}, not {what}; {_FIX}."
        )
    if config.target_modules is None:
        config.target_modules = MODEL_TYPES[kind]
    target = str(config.target_modules)
    names = [name for name, _ in targeting.walk(model) if name.endswith("." + target)]
    if not names:
        raise TargetError(
            f"target_modules={target!r} names no module of {type(model).__name__}; set it to the attention "
            f"module's attribute name in each decoder layer (for {kind}: {MODEL_TYPES[kind]!r}), or leave it None."
        )
    assert config.adapter_layers is not None  # checked by the config
    if config.adapter_layers > len(names):
        raise ConfigError(
            f"adapter_layers={config.adapter_layers} but the model has only {len(names)} {target!r} modules; "
            f"set adapter_layers to at most {len(names)}."
        )
    # Adapters already inside these modules (LoRA on q_proj, ...) stay where they are: targeting walks
    # into adapted layers, so they keep saving, training and merging under their own names.
    return names[-config.adapter_layers :]
