"""LoRA adapters for dense, embedding and convolution layers.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models" (2021); rsLoRA: Kalajdzievski,
"A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA" (2023).

Update rule: ``h = W0 x + s * B(A(dropout(x)))`` with ``s = alpha / r`` (rsLoRA ``alpha / sqrt(r)``).
Shapes (canonical, see weights.py): dense ``A: (r, in)``, ``B: (out, r)``; embedding
``A: (r, num_embeddings)``, ``B: (dim, r)``; convolution ``A: (r, in, *kernel)``,
``B: (out, r, 1, ...)``. Parameter names are PEFT's checkpoint names.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deltatune import weights
from deltatune.errors import UnsupportedLayerError
from deltatune.layer import Adapter
from deltatune.methods.lora.config import LoraConfig
from deltatune.methods.lora.mixed import mixed_conv, mixed_embedding, mixed_linear


class LoraAdapter(Adapter):
    """What every LoRA adapter shares: rank, scaling, dropout, dtype casting."""

    def __init__(self, r: int, alpha: float, dropout: float, use_rslora: bool) -> None:
        super().__init__()
        self.r = r
        self.lora_alpha = alpha
        self.scaling = alpha / math.sqrt(r) if use_rslora else alpha / r
        self.dropout_p = dropout
        self.lora_dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return self.add_delta(x, inner(x))

    def add_delta(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling:g}"


def reset_factors(a: torch.Tensor, b: torch.Tensor, r: int, init: bool | str) -> None:
    """True: A Kaiming-uniform, B = 0; "gaussian": A ~ N(0, 1/r), B = 0; False: leave both random."""
    if init is False:
        return
    if init == "gaussian":
        nn.init.normal_(a, std=1 / r)
    else:
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
    nn.init.zeros_(b)


class LoraLinear(LoraAdapter):
    mixed_forward = staticmethod(mixed_linear)

    def __init__(self, in_features: int, out_features: int, r: int, alpha: float, dropout: float, rs: bool) -> None:
        super().__init__(r, alpha, dropout, rs)
        self.lora_A = nn.Linear(in_features, r, bias=False)
        self.lora_B = nn.Linear(r, out_features, bias=False)

    def reset(self, init: bool | str) -> None:
        reset_factors(self.lora_A.weight, self.lora_B.weight, self.r, init)

    def add_delta(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        a = self.lora_A.weight
        h = F.linear(self.lora_dropout(x.to(a.dtype)), a)
        b = self.lora_B.weight
        if out.dtype == b.dtype:
            # One fused GEMM: out + s * h @ B^T, with the scale applied inside.
            flat = torch.addmm(out.reshape(-1, out.shape[-1]), h.reshape(-1, h.shape[-1]), b.t(), alpha=self.scaling)
            return flat.view(out.shape)
        return out + (F.linear(h, b) * self.scaling).to(out.dtype)

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling


class LoraEmbedding(LoraAdapter):
    mixed_forward = staticmethod(mixed_embedding)

    def __init__(self, base: nn.Embedding, r: int, alpha: float, dropout: float, rs: bool) -> None:
        super().__init__(r, alpha, dropout, rs)
        # PEFT applies no dropout to embedding LoRA (the input is token ids).
        self.lora_dropout = nn.Identity()
        self.padding_idx = base.padding_idx
        self.max_norm = base.max_norm
        self.norm_type = base.norm_type
        self.scale_grad_by_freq = base.scale_grad_by_freq
        self.sparse = base.sparse
        self.lora_embedding_A = nn.Parameter(torch.randn(r, base.num_embeddings, dtype=torch.float32))
        self.lora_embedding_B = nn.Parameter(torch.randn(base.embedding_dim, r, dtype=torch.float32))

    def reset(self, init: bool | str) -> None:
        if init is False:
            return
        nn.init.zeros_(self.lora_embedding_A)
        nn.init.normal_(self.lora_embedding_B)

    def embed(self, ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return F.embedding(
            ids, table, self.padding_idx, self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse
        )

    def add_delta(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        h = self.embed(x, self.lora_embedding_A.t())
        return out + (F.linear(h, self.lora_embedding_B) * self.scaling).to(out.dtype)

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_embedding_B @ self.lora_embedding_A).t() * self.scaling


class LoraConv(LoraAdapter):
    mixed_forward = staticmethod(mixed_conv)

    def __init__(self, base: nn.Conv1d | nn.Conv2d | nn.Conv3d, r: int, alpha: float, dropout: float, rs: bool):
        super().__init__(r, alpha, dropout, rs)
        conv: Any = type(base)  # the same ConvNd class as the base
        ones = (1,) * (base.weight.dim() - 2)
        self.lora_A = conv(base.in_channels, r, base.kernel_size, base.stride, base.padding, bias=False)
        self.lora_B = conv(r, base.out_channels, ones, ones, bias=False)

    def reset(self, init: bool | str) -> None:
        reset_factors(self.lora_A.weight, self.lora_B.weight, self.r, init)

    def add_delta(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        a = self.lora_A.weight
        delta = self.lora_B(self.lora_A(self.lora_dropout(x.to(a.dtype))))
        return out + (delta * self.scaling).to(out.dtype)

    def delta_weight(self) -> torch.Tensor:
        a = self.lora_A.weight  # (r, in, *k)
        b = self.lora_B.weight.flatten(1)  # (out, r)
        return (b @ a.flatten(1)).view(b.shape[0], *a.shape[1:]) * self.scaling


def create_lora(base: nn.Module, name: str, config: LoraConfig) -> LoraAdapter:  # type: ignore[override]
    """Build the LoRA adapter that fits ``base`` (the module ``name`` of the model)."""
    r, alpha = config.rank_and_alpha(name)
    args = (r, alpha, config.lora_dropout, config.use_rslora)
    # Build on the base's device: on "meta" nothing is allocated, so injection stays fast.
    with torch.device(weights.module_device(base)):
        adapter = _build(base, name, args)
        adapter.reset(config.init_lora_weights)  # type: ignore[operator]
    return adapter.to(dtype=weights.adapter_dtype(base))


def _build(base: nn.Module, name: str, args: tuple[int, float, float, bool]) -> LoraAdapter:
    adapter: LoraAdapter
    if weights.is_linear(base):
        in_f, out_f = weights.linear_features(base)
        adapter = LoraLinear(in_f, out_f, *args)
    elif isinstance(base, nn.Embedding):
        adapter = LoraEmbedding(base, *args)
    elif isinstance(base, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        if base.groups != 1 or any(d != 1 for d in base.dilation) or isinstance(base.padding, str):
            raise UnsupportedLayerError(
                f"LoRA supports convolutions with groups=1, dilation=1 and numeric padding; {name} has "
                f"groups={base.groups}, dilation={base.dilation}, padding={base.padding!r}. "
                "Leave it out with exclude_modules."
            )
        adapter = LoraConv(base, *args)
    else:
        raise UnsupportedLayerError(
            f"LoRA cannot adapt {name} ({type(base).__name__}); it supports Linear, Embedding, "
            "Conv1d/2d/3d and GPT-2 Conv1D. Remove it from target_modules or add it to exclude_modules."
        )
    return adapter


def supports_lora(module: nn.Module) -> bool:
    return weights.layer_kind(module) is not None
