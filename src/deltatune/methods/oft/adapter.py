"""OFT adapters for dense, embedding and convolution layers.

Qiu et al., "Controlling Text-to-Image Diffusion by Orthogonal Finetuning" (NeurIPS 2023).

Update rule: ``W' = W R^T`` with ``R = diag(R_1, ..., R_r)`` block-diagonal and each block
``R_i = cayley(S_i)`` of a skew-symmetric ``S_i`` (or its Neumann series, see orthogonal.py).
A dense layer computes ``h = W' x + b``, i.e. the input is rotated first: ``x R`` as a row.
An embedding rotates its output rows: ``E' = E R``. A convolution rotates each output filter
flattened over ``(in, *kernel)``: ``W'[o] = R W[o]``, run as one convolution with ``W'``.

Shapes: the trained generator ``oft_R.weight`` (``oft_embedding_R.weight`` on embeddings) is
``(r, b(b-1)/2)`` — the packed strict upper triangle of each ``S_i`` — or ``(1, ...)`` with
``block_share``; ``r * b`` = in_features (dense), embedding_dim, or ``in * prod(kernel)`` (conv).
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
from deltatune.methods.oft.config import OFTConfig

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class OftGenerators(nn.Module):
    """The trained skew-symmetric generators of one layer: ``weight`` (blocks, b(b-1)/2)."""

    def __init__(self, stored: int, block_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(stored, orth.packed_size(block_size)))


class OftAdapter(Adapter):
    """What every OFT adapter shares: the generators and their rotation blocks."""

    generator_name = "oft_R"

    def __init__(self, features: int, blocks: int, block_size: int, config: OFTConfig) -> None:
        super().__init__()
        self.features = features
        self.r = blocks
        self.block_size = block_size
        self.coft = config.coft
        self.eps = float(config.eps)
        self.exact = not config.use_cayley_neumann
        self.terms = config.num_cayley_neumann_terms
        self.dropout_p = float(config.module_dropout)
        setattr(self, self.generator_name, OftGenerators(1 if config.block_share else blocks, block_size))

    @property
    def generators(self) -> nn.Parameter:
        return getattr(self, self.generator_name).weight

    def reset(self, init: bool) -> None:
        if init:
            nn.init.zeros_(self.generators)
        else:
            nn.init.normal_(self.generators, mean=0.0, std=0.1)

    def blocks(self, train: bool = True) -> torch.Tensor:
        """The rotation blocks as (1, stored blocks, b, b); dropout only while training."""
        packed = self.generators
        if self.coft:
            # Constrained OFT projects the stored generators themselves (as PEFT does, every call).
            with torch.no_grad():
                packed.copy_(orth.coft_project(packed, self.eps))
        skew = orth.skew_from_packed(packed, self.block_size)
        rot = orth.cayley(skew) if self.exact else orth.cayley_neumann(skew, self.terms)
        rot = rot.unsqueeze(0)
        if train and self.training and self.dropout_p > 0:
            rot = orth.drop_blocks(rot, self.dropout_p)
        return rot

    # Merging: rows of the canonical weight are rotated (``transpose`` picks R or R^T).
    merge_transpose = True

    def merge_into(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            rot = self.blocks(train=False).to(weight.dtype)
            return self._rows(weight, rot, self.merge_transpose)

    def unmerge_from(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.exact:  # orthogonal: R^T undoes R exactly, no solve
                rot = self.blocks(train=False).to(weight.dtype)
                return self._rows(weight, rot, not self.merge_transpose)
            # The Neumann series is only nearly orthogonal: invert its blocks, in float64.
            rot = orth.inverse_blocks(self.blocks(train=False).double(), orthogonal=False)
            return self._rows(weight.double(), rot, not self.merge_transpose).to(weight.dtype)

    def _rows(self, weight: torch.Tensor, rot: torch.Tensor, transpose: bool) -> torch.Tensor:
        flat = weight.reshape(weight.shape[0], -1)
        return orth.rotate(flat, rot, transpose=transpose).view(weight.shape)

    def extra_repr(self) -> str:
        shared = ", block_share" if self.generators.shape[0] == 1 and self.r > 1 else ""
        kind = "cayley" if self.exact else f"neumann({self.terms})"
        return f"r={self.r}, block_size={self.block_size}, {kind}{shared}{', coft' if self.coft else ''}"


class OftLinear(OftAdapter):
    """Dense layer (nn.Linear or GPT-2 Conv1D): rotates the input, ``h = base(x R)``."""

    def forward(self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        rot = self.blocks()
        return inner(orth.rotate(x.to(rot.dtype), rot).to(x.dtype))


class OftEmbedding(OftAdapter):
    """Embedding: rotates the looked-up rows, ``h = E[ids] R``; merged ``E' = E R``."""

    generator_name = "oft_embedding_R"
    merge_transpose = False

    def forward(self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        out = inner(x)
        rot = self.blocks()
        return orth.rotate(out.to(rot.dtype), rot).to(out.dtype)


class OftConv(OftAdapter):
    """Convolution: rotates every flattened filter, ``W'[o] = R W[o]``, and convolves with ``W'``.

    Merged and unmerged outputs are the same function, so ``merge`` is exact.
    """

    needs_base = True

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor], base: nn.Module
    ) -> torch.Tensor:
        weight = weights.base_weight(base)
        rot = self.blocks()
        rotated = self._rows(weight.to(rot.dtype), rot, transpose=True).to(weight.dtype)
        return orth.conv_with_weight(base, x, rotated, inner, "OFT")


def create_oft(base: nn.Module, name: str, config: OFTConfig) -> OftAdapter:
    """Build the OFT adapter that fits ``base`` (the module ``name`` of the model)."""
    cls: type[OftAdapter]
    if weights.is_linear(base):
        cls, features = OftLinear, weights.linear_features(base)[0]
    elif isinstance(base, nn.Embedding):
        cls, features = OftEmbedding, base.embedding_dim
    elif isinstance(base, _CONVS) and base.groups == 1:
        cls, features = OftConv, base.in_channels * math.prod(base.kernel_size)
    elif isinstance(base, _CONVS):
        raise UnsupportedLayerError(
            f"OFT cannot adapt {name} ({type(base).__name__} with groups={base.groups}): it rotates whole filters "
            "and needs groups=1. Leave it out with exclude_modules."
        )
    else:
        raise UnsupportedLayerError(
            f"OFT cannot adapt {name} ({type(base).__name__}); it supports Linear, GPT-2 Conv1D, Embedding and "
            "Conv1d/2d/3d. Remove it from target_modules or add it to exclude_modules."
        )
    blocks, size = config.blocks_for(features, name)
    with torch.device(weights.module_device(base)):
        adapter = cls(features, blocks, size, config)
        adapter.reset(config.init_weights)
    return adapter.to(dtype=weights.adapter_dtype(base))


def supports_oft(module: nn.Module) -> bool:
    if isinstance(module, _CONVS):
        return module.groups == 1
    return weights.is_linear(module) or isinstance(module, nn.Embedding)
