"""BOFT adapters for dense and convolution layers.

Liu et al., "Parameter-Efficient Orthogonal Finetuning via Butterfly Factorization" (ICLR 2024).

Update rule: ``W' = diag(s) W M^T`` with the butterfly rotation ``M = B_{m-1} ... B_0``,
``B_i = P_i diag(R_i1, ..., R_iD) P_i^T`` (``P_i`` the fixed level-``i`` butterfly permutation,
``P_0 = I``) and every block ``R = (I - S)(I + S)^-1`` the exact Cayley transform of
``S = (A - A^T) / 2``, the skew-symmetric part of a trained square matrix ``A``. A dense layer
rotates its input and scales its output: ``h = s * (W (x M)) + b``; a convolution convolves
with the rotated, scaled filters (flattened over ``(in, *kernel)``), so merged and unmerged
outputs are the same function.

Shapes: ``boft_R`` (m, D, b, b) with ``D * b`` = in_features (dense) or ``in * prod(kernel)``
(conv); ``boft_s`` (out, 1) on dense layers and (1, out) on convolutions, as PEFT stores them.
The permutations are reshapes computed on the fly, not stored (PEFT does not save them either).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from deltatune import weights
from deltatune.errors import UnsupportedLayerError
from deltatune.layer import Adapter
from deltatune.methods import orthogonal as orth
from deltatune.methods.boft.config import BOFTConfig

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class BoftAdapter(Adapter):
    """What every BOFT adapter shares: the butterfly blocks ``boft_R`` and the scale ``boft_s``."""

    needs_base = True  # dense: the base bias stays unscaled; conv: the filters are rotated

    def __init__(self, features: int, out_features: int, blocks: int, block_size: int, config: BOFTConfig) -> None:
        super().__init__()
        self.features = features
        self.block_num = blocks
        self.block_size = block_size
        self.dropout_p = float(config.boft_dropout)
        factors = config.boft_n_butterfly_factor
        self.boft_R = nn.Parameter(torch.zeros(factors, blocks, block_size, block_size))
        self.boft_s = nn.Parameter(torch.ones(self.scale_shape(out_features)))

    @staticmethod
    def scale_shape(out_features: int) -> tuple[int, int]:
        return (out_features, 1)

    def reset(self, init: bool) -> None:
        if init:
            nn.init.zeros_(self.boft_R)
            nn.init.ones_(self.boft_s)
        else:
            nn.init.normal_(self.boft_R, mean=0.0, std=0.1)
            nn.init.normal_(self.boft_s, mean=1.0, std=0.1)

    def blocks(self, train: bool = True) -> torch.Tensor:
        """The rotation blocks (m, D, b, b): exact Cayley transforms, all factors in one solve."""
        rot = orth.cayley(orth.skew_from_square(self.boft_R))
        if train and self.training and self.dropout_p > 0:
            rot = orth.drop_blocks(rot, self.dropout_p)
        return rot

    def scaled_weight(self, weight: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
        """``diag(s) W M^T`` for a canonical weight (rows = output features)."""
        flat = weight.reshape(weight.shape[0], -1)
        rotated = orth.rotate(flat, rot, transpose=True) * self.boft_s.reshape(-1, 1)
        return rotated.view(weight.shape)

    def merge_into(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.scaled_weight(weight, self.blocks(train=False).to(weight.dtype))

    def unmerge_from(self, weight: torch.Tensor) -> torch.Tensor:
        # M is orthogonal (exact Cayley), so M^T undoes it; the scale is divided out first.
        with torch.no_grad():
            rot = self.blocks(train=False).to(weight.dtype)
            flat = weight.reshape(weight.shape[0], -1) / self.boft_s.reshape(-1, 1).to(weight.dtype)
            return orth.rotate(flat, rot).view(weight.shape)

    def extra_repr(self) -> str:
        factors = self.boft_R.shape[0]
        return f"block_num={self.block_num}, block_size={self.block_size}, butterfly_factors={factors}"


class BoftLinear(BoftAdapter):
    """Dense layer (nn.Linear or GPT-2 Conv1D): ``h = s * (base(x M) - b) + b``."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor], base: nn.Module
    ) -> torch.Tensor:
        rot = self.blocks()
        out = inner(orth.rotate(x.to(rot.dtype), rot).to(x.dtype))
        scale = self.boft_s.view(-1)
        bias = getattr(base, "bias", None)
        if bias is None:
            return (out.to(scale.dtype) * scale).to(out.dtype)
        # s * (out - b) + b, with the bias term folded into one vector.
        shift = bias.to(scale.dtype) * (1 - scale)
        return torch.addcmul(shift, out.to(scale.dtype), scale).to(out.dtype)


class BoftConv(BoftAdapter):
    """Convolution: convolves with ``W' = diag(s) W M^T`` (filters flattened over in x kernel)."""

    @staticmethod
    def scale_shape(out_features: int) -> tuple[int, int]:
        return (1, out_features)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor], base: nn.Module
    ) -> torch.Tensor:
        weight = weights.base_weight(base)
        rotated = self.scaled_weight(weight.to(self.boft_R.dtype), self.blocks()).to(weight.dtype)
        return orth.conv_with_weight(base, x, rotated, inner, "BOFT")


def create_boft(base: nn.Module, name: str, config: BOFTConfig) -> BoftAdapter:
    """Build the BOFT adapter that fits ``base`` (the module ``name`` of the model)."""
    cls: type[BoftAdapter]
    if weights.is_linear(base):
        cls = BoftLinear
        features, out_features = weights.linear_features(base)
    elif isinstance(base, _CONVS) and base.groups == 1:
        cls = BoftConv
        features, out_features = base.in_channels * math.prod(base.kernel_size), base.out_channels
    elif isinstance(base, _CONVS):
        raise UnsupportedLayerError(
            f"BOFT cannot adapt {name} ({type(base).__name__} with groups={base.groups}): it rotates whole filters "
            "and needs groups=1. Leave it out with exclude_modules."
        )
    else:
        raise UnsupportedLayerError(
            f"BOFT cannot adapt {name} ({type(base).__name__}); it supports Linear, GPT-2 Conv1D and Conv1d/2d/3d. "
            "Remove it from target_modules or add it to exclude_modules."
        )
    blocks, size = config.blocks_for(features, name)
    with torch.device(weights.module_device(base)):
        adapter = cls(features, out_features, blocks, size, config)
        adapter.reset(config.init_weights)
    return adapter.to(dtype=weights.adapter_dtype(base))


def supports_boft(module: nn.Module) -> bool:
    if isinstance(module, _CONVS):
        return module.groups == 1
    return weights.is_linear(module)
