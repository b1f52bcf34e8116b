"""Tiny models for the test matrix: one per layer type, plus small transformers models."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin0 = nn.Linear(10, 20)
        self.act = nn.ReLU()
        self.lin1 = nn.Linear(20, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin1(self.act(self.lin0(x)))


class EmbeddingModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 12, padding_idx=0)
        self.lin0 = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin0(self.emb(x))


class ConvModel(nn.Module):
    def __init__(self, dims: int) -> None:
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
        self.conv0 = conv(3, 8, 3, padding=1)
        self.conv1 = conv(8, 5, 2, stride=2)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.act(self.conv0(x)))


class GPT2Conv1DModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from transformers.pytorch_utils import Conv1D

        self.c_fc = Conv1D(24, 10)  # (nf=out, nx=in)
        self.act = nn.Tanh()
        self.c_proj = Conv1D(6, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


def tiny_llama(vocab: int = 64) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg)


def tiny_bert_cls() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        num_labels=3,
    )
    return BertForSequenceClassification(cfg)


@dataclass(frozen=True)
class ModelCase:
    """A tiny model, how to feed it, and which of its modules are the test targets."""

    name: str
    kind: str  # the layer kind exercised: linear, embedding, conv1d/2d/3d, gpt2_conv1d, transformer
    build: Callable[[], nn.Module]
    inputs: Callable[[int], Any]  # batch size -> input
    targets: list[str] | str

    def make(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return self.build().eval()

    def run(self, model: nn.Module, x: Any, **kwargs: Any) -> torch.Tensor:
        out = model(x, **kwargs)
        return out.logits if hasattr(out, "logits") else out


def _ids(vocab: int, length: int) -> Callable[[int], torch.Tensor]:
    def make(batch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(batch)
        return torch.randint(1, vocab, (batch, length), generator=g)

    return make


def _floats(*shape: int) -> Callable[[int], torch.Tensor]:
    def make(batch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(batch)
        return torch.randn(batch, *shape, generator=g)

    return make


MODEL_CASES = [
    ModelCase("mlp", "linear", MLP, _floats(10), ["lin0", "lin1"]),
    ModelCase("embedding", "embedding", EmbeddingModel, _ids(50, 7), ["emb", "lin0"]),
    ModelCase("conv1d", "conv1d", lambda: ConvModel(1), _floats(3, 12), ["conv0", "conv1"]),
    ModelCase("conv2d", "conv2d", lambda: ConvModel(2), _floats(3, 8, 8), ["conv0", "conv1"]),
    ModelCase("conv3d", "conv3d", lambda: ConvModel(3), _floats(3, 4, 6, 6), ["conv0", "conv1"]),
    ModelCase("gpt2_conv1d", "gpt2_conv1d", GPT2Conv1DModel, _floats(5, 10), ["c_fc", "c_proj"]),
    ModelCase("llama", "transformer", tiny_llama, _ids(64, 9), "all-linear"),
]


# ---- norms, tied embeddings (LN tuning, trainable tokens, bias tuning, bottleneck adapters)
class NormModel(nn.Module):
    """Dense layers with a LayerNorm (weight and bias) and an RMSNorm (weight only) between them."""

    def __init__(self) -> None:
        super().__init__()
        self.lin0 = nn.Linear(10, 16)
        self.ln = nn.LayerNorm(16)
        self.act = nn.ReLU()
        self.lin1 = nn.Linear(16, 8)
        self.rms = nn.RMSNorm(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rms(self.lin1(self.act(self.ln(self.lin0(x)))))


def tiny_gpt2_lm(vocab: int = 64) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2)
    return GPT2LMHeadModel(cfg)


def tiny_llama_tied(vocab: int = 64) -> nn.Module:
    model = tiny_llama(vocab)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    return model


MODEL_CASES += [
    ModelCase("norm", "norm", NormModel, _floats(10), ["ln", "rms"]),
    ModelCase(
        "llama_norms",
        "transformer_norm",
        tiny_llama,
        _ids(64, 9),
        ["input_layernorm", "post_attention_layernorm", "norm"],
    ),
    ModelCase("llama_tied", "tied_embedding", tiny_llama_tied, _ids(64, 9), ["embed_tokens"]),
    # Methods that adapt whole attention modules (the adaption prompt): the tiny Llama's self_attn.
    ModelCase("llama_attention", "llama_attention", tiny_llama, _ids(64, 9), "self_attn"),
    ModelCase("gpt2_attention", "gpt2_attention", lambda: tiny_gpt2_lm(), _ids(64, 9), "attn"),
]


# ---- nn.MultiheadAttention (LoRA on its packed in_proj and its out_proj)
class MHAModel(nn.Module):
    """Attention (batch first, packed q/k/v projections) between two dense layers, with a residual.

    Keys and values are tanh(h), not h itself: self-attention in eval mode takes torch's fused
    kernel only when no weight requires grad, so a frozen copy and a trainable reference would
    differ by rounding; tests/test_lora_mha.py covers that path.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lin0 = nn.Linear(10, 16)
        self.mha = nn.MultiheadAttention(16, 4, batch_first=True)
        self.lin1 = nn.Linear(16, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin0(x)
        memory = torch.tanh(h)
        attended, _ = self.mha(h, memory, memory, need_weights=False)
        return self.lin1(attended + h)


MODEL_CASES += [ModelCase("mha", "mha", MHAModel, _floats(5, 10), ["mha", "lin1"])]


# ---- raw parameters (LoRA's target_parameters): fused MoE experts stored as 3-D tensors
class FusedExperts(nn.Module):
    """Experts kept as (experts, out, in) parameters, as transformers' MoE ``*Experts`` modules do;
    every expert sees every token and their outputs are averaged (no router, to stay deterministic)."""

    def __init__(self, experts: int = 3, hidden: int = 8, inner: int = 6) -> None:
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.randn(experts, 2 * inner, hidden) * 0.3)
        self.down_proj = nn.Parameter(torch.randn(experts, hidden, inner) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = torch.einsum("...h,eoh->...eo", x, self.gate_up_proj).chunk(2, dim=-1)
        out = torch.einsum("...ei,ehi->...eh", torch.nn.functional.silu(gate) * up, self.down_proj)
        return out.mean(dim=-2)


class ExpertsModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.experts = FusedExperts()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.experts(self.proj(x))


# Targets are parameter names here (the method case passes them as target_parameters).
MODEL_CASES += [
    ModelCase(
        "experts", "parameters", ExpertsModel, _floats(4, 8), ["experts.gate_up_proj", "down_proj", "proj.weight"]
    )
]


class SeededBases:
    """Base models built once each (seed 0, eval mode, construction warnings silenced) and handed out
    as deep copies: both libraries change the model they adapt, and every test needs the same weights."""

    def __init__(self, builders: dict[str, Callable[[], nn.Module]]) -> None:
        self.builders = builders
        self._built: dict[str, nn.Module] = {}

    def __call__(self, kind: str) -> nn.Module:
        import copy
        import warnings

        if kind not in self._built:
            torch.manual_seed(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._built[kind] = self.builders[kind]().eval()
        return copy.deepcopy(self._built[kind])


def outputs(model: nn.Module, x: Any) -> torch.Tensor:
    """The model's output on ``x`` in eval mode without gradients (the logits of a transformers model)."""
    model.eval()
    with torch.no_grad():
        out = model(x)
    return out.logits if hasattr(out, "logits") else out
