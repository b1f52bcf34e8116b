"""LoRA on ``nn.MultiheadAttention``: low-rank updates of its packed input projection and its output projection.

``nn.MultiheadAttention`` keeps the query/key/value projections in one parameter,
``in_proj_weight (3E, E)``, and calls ``F.multi_head_attention_forward`` with it and with
``out_proj.weight (E, E)`` directly (never through ``out_proj``'s own forward), so no Linear layer
can be wrapped. The adapter therefore runs the attention with updated weights instead.

PEFT compatibility: PEFT 0.21.2 adds the out_proj update twice, in its forward and in its merge
(``W_out + 2 s B_out A_out``; huggingface/peft PR #3774, open, would change that). Adapters trained
there learned under that rule, so ``OUT_PROJ_FACTOR`` reproduces it: the same checkpoint gives the
same outputs in both libraries. Set it to 1.0 the day PEFT's fix ships.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from deltatune import weights
from deltatune.errors import ConfigError, UnsupportedLayerError
from deltatune.methods.lora.adapter import LoraAdapter, LoraLinear, reset_factors
from deltatune.targeting import unwrap

# How many times out_proj's update reaches the weight (see the module docstring): PEFT 0.21.2's rule.
OUT_PROJ_FACTOR = 2.0


class OutProjSlot(nn.Module):
    """Holds the ``out_proj`` LoRA, so its checkpoint keys are PEFT's ``base_layer.out_proj.lora_A.weight``."""

    def __init__(self, out_proj: LoraLinear) -> None:
        super().__init__()
        self.out_proj = out_proj


class LoraMultiheadAttention(LoraAdapter):
    """LoRA on an ``nn.MultiheadAttention`` (Hu et al., 2021), both projections at once, as PEFT does.

    Update rule (merged-weight semantics): the attention runs with
    ``W_in' = W_in + s B_in A_in`` and ``W_out' = W_out + c s B_out A_out`` (``s = alpha / r``, or
    ``alpha / sqrt(r)`` with rsLoRA; ``c = OUT_PROJ_FACTOR``, 2 as in PEFT 0.21.2); the base
    parameters are never edited, the updated tensors are substituted for the duration of the call,
    so gradients reach A and B through the attention.
    Shapes: ``lora_A: (r, E)``, ``lora_B: (3E, r)`` for ``in_proj_weight (3E, E)``;
    ``base_layer.out_proj.lora_A: (r, E)``, ``base_layer.out_proj.lora_B: (E, r)`` for
    ``out_proj.weight (E, E)``. No dropout: the update lives in the weights (PEFT ignores
    ``lora_dropout`` here too). Mixed-adapter batches are not supported.
    """

    needs_base = True  # type: ignore[assignment]  # the weights to update are the base's
    merges_module = True  # two weights, neither of them a ``weight`` attribute

    def __init__(self, base: nn.MultiheadAttention, r: int, alpha: float, dropout: float, rs: bool) -> None:
        super().__init__(r, alpha, 0.0, rs)
        embed = base.embed_dim
        self.lora_A = nn.Linear(embed, r, bias=False)
        self.lora_B = nn.Linear(r, 3 * embed, bias=False)
        self.base_layer = OutProjSlot(LoraLinear(embed, embed, r, alpha, 0.0, rs))
        self.register_forward_pre_hook(_no_encoder_fast_path)

    @property
    def out_lora(self) -> LoraLinear:
        return self.base_layer.out_proj

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lora_A.weight, self.lora_B.weight

    def reset(self, init: bool | str) -> None:
        reset_factors(self.lora_A.weight, self.lora_B.weight, self.r, init)
        self.out_lora.reset(init)

    def delta_weight(self) -> torch.Tensor:
        """The update of ``in_proj_weight``: (3E, E)."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    def out_delta(self) -> torch.Tensor:
        """The update of ``out_proj.weight``: (E, E)."""
        return self.out_lora.delta_weight() * OUT_PROJ_FACTOR

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, inner: Callable[..., Any], base: nn.Module | None = None
    ) -> Any:
        assert isinstance(base, nn.MultiheadAttention), (
            "AdaptedLayer passes the base module to adapters with needs_base"
        )
        # Read at call time: with several adapters on the layer, the one below adds its update to these.
        w_in, w_out = base.in_proj_weight, base.out_proj.weight
        new_in = w_in + self.delta_weight().to(w_in.dtype)
        new_out = w_out + self.out_delta().to(w_out.dtype)
        with _substituted(base, new_in, new_out):
            return inner(x)

    # ------------------------------------------------------------------ merging
    def merge_module(self, base: nn.Module, safe: bool = False) -> None:
        assert isinstance(base, nn.MultiheadAttention)
        self._write(base, sign=1.0, safe=safe)

    def unmerge_module(self, base: nn.Module) -> None:
        assert isinstance(base, nn.MultiheadAttention)
        self._write(base, sign=-1.0, safe=False)

    def _write(self, base: nn.MultiheadAttention, sign: float, safe: bool) -> None:
        """Add (``sign=1``) or subtract both updates, computed in fp32 (fp64 for a fp64 base)."""
        pairs = ((base.in_proj_weight, self.delta_weight()), (base.out_proj.weight, self.out_delta()))
        with torch.no_grad():
            new = []
            for weight, delta in pairs:
                dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
                new.append(weight.detach().to(dtype) + sign * delta.to(dtype))
            if safe:
                for value in new:
                    weights.check_finite(base, value, what="the LoRA adapter")
            for (weight, _), value in zip(pairs, new, strict=True):
                weight.copy_(value.to(weight.dtype))


def _no_encoder_fast_path(module: nn.Module, args: tuple[Any, ...]) -> None:
    """Does nothing; its presence matters. In eval mode ``nn.TransformerEncoderLayer`` runs a fused
    kernel on ``self_attn.in_proj_weight`` without calling the attention's forward, which would skip
    this adapter; it takes that path only when no submodule has a forward hook."""
    return None


@contextlib.contextmanager
def _substituted(base: nn.MultiheadAttention, in_proj: torch.Tensor, out_proj: torch.Tensor) -> Iterator[None]:
    """``base`` reads ``in_proj`` and ``out_proj`` as its two projection weights inside the block.

    The tensors go into the modules' parameter tables for the call only (what
    ``torch.func.functional_call`` does), so the attention's own forward, masks and fast path run
    unchanged, and the stored parameters are restored, untouched, whatever happens.
    """
    inner_params, out_params = base._parameters, base.out_proj._parameters
    saved = inner_params["in_proj_weight"], out_params["weight"]
    inner_params["in_proj_weight"], out_params["weight"] = in_proj, out_proj  # type: ignore[assignment]
    try:
        yield
    finally:
        inner_params["in_proj_weight"], out_params["weight"] = saved


def check_mha(base: nn.MultiheadAttention, name: str) -> None:
    """The attention layouts this adapter handles (PEFT's): packed q/k/v and a Linear out_proj."""
    if not base._qkv_same_embed_dim or base.in_proj_weight is None:
        raise UnsupportedLayerError(
            f"LoRA on nn.MultiheadAttention needs query, key and value of the same size (one packed in_proj_weight); "
            f"{name} has kdim={base.kdim}, vdim={base.vdim}, embed_dim={base.embed_dim}. "
            "Remove it from target_modules or add it to exclude_modules."
        )
    if not isinstance(base.out_proj, nn.Linear):
        raise UnsupportedLayerError(
            f"LoRA on nn.MultiheadAttention needs an nn.Linear out_proj; {name}.out_proj is a "
            f"{type(base.out_proj).__name__}. Remove {name} from target_modules or add it to exclude_modules."
        )


def check_mha_targets(model: nn.Module, bases: dict[str, nn.Module]) -> None:
    """An attention's ``out_proj`` is never called through its forward: refuse targeting it alone,
    or together with its attention (whose adapter already updates it)."""
    for name in bases:
        parent_name, _, leaf = name.rpartition(".")
        if leaf != "out_proj":
            continue
        parent = unwrap(model.get_submodule(parent_name) if parent_name else model)  # maybe already adapted
        if isinstance(parent, nn.MultiheadAttention):
            target = parent_name or "<the model>"
            raise ConfigError(
                f"{name} is the out_proj of an nn.MultiheadAttention, which never calls its forward, so a LoRA on it "
                f"would do nothing. Target the attention itself ({target!r}; its LoRA also updates out_proj) and "
                f"leave {name} out (exclude_modules=[{name!r}], also needed with 'all-linear')."
            )
