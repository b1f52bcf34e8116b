"""HRA adapters for dense layers and 2-D convolutions.

Yuan et al., "Bridging The Gap between Low-rank and Orthogonal Adaptation via Householder
Reflection Adaptation" (NeurIPS 2024).

Update rule: ``W' = W H`` with ``H = H_1 H_2 ... H_r`` and ``H_i = I - 2 u_i u_i^T`` for the
normalised columns ``u_i`` of ``hra_u: (d, r)``, ``d = in_features`` (dense) or
``in_channels * kh * kw`` (convolution, on the flattened kernel). With ``apply_GS`` the columns
are orthonormalised first (Gram-Schmidt, here by QR, which spans the same subspaces) and
``H = I - 2 Q Q^T``. ``H`` is orthogonal, so unmerging multiplies by ``H^T = H_r ... H_1``.

The product is kept in compact WY form, ``H = I - L R^T`` with ``L, R: (d, r)``: for plain
reflections ``R = U`` and ``L = U T`` where ``T^{-1} = I / 2 + striu(U^T U)`` (``T`` upper
triangular, ``r x r``). A dense layer then never builds ``H``: ``W' x = W (x - R (L^T x))``, so
the adapter only transforms the input of the layer below at ``O(d r)`` per token.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from deltatune import weights
from deltatune.config import AdapterConfig
from deltatune.errors import ConfigError, DeltatuneError, UnsupportedLayerError
from deltatune.layer import Adapter
from deltatune.methods.hra.config import HRAConfig


class HRAAdapter(Adapter):
    """What both HRA adapters share: the reflection vectors ``hra_u (d, r)`` and their product."""

    def __init__(self, dim: int, r: int, apply_gs: bool) -> None:
        super().__init__()
        self.r = r
        self.apply_GS = apply_gs
        self.hra_u = nn.Parameter(torch.empty(dim, r))

    def reset(self, init: bool) -> None:
        """True (even r): pairs of equal vectors, whose reflections cancel; else Kaiming-uniform vectors."""
        with torch.no_grad():
            if init and self.r % 2 == 0:
                half = torch.empty(self.hra_u.shape[0], self.r // 2, device=self.hra_u.device)
                nn.init.kaiming_uniform_(half, a=math.sqrt(5))
                self.hra_u.copy_(half.repeat_interleave(2, dim=1))
            else:
                nn.init.kaiming_uniform_(self.hra_u, a=math.sqrt(5))

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, R), both (d, r), with ``H = I - L R^T``."""
        u = self.hra_u
        if self.apply_GS:
            q = torch.linalg.qr(u, mode="reduced").Q
            return 2 * q, q
        u = u / u.norm(dim=0)
        inverse_t = torch.triu(u.t() @ u, diagonal=1) + 0.5 * torch.eye(self.r, device=u.device, dtype=u.dtype)
        identity = torch.eye(self.r, device=u.device, dtype=u.dtype)
        t = torch.linalg.solve_triangular(inverse_t, identity, upper=True)
        return u @ t, u

    def merge_into(self, weight: torch.Tensor) -> torch.Tensor:
        left, right = self.factors()
        flat = weight.flatten(1)
        return (flat - (flat @ left.to(flat.dtype)) @ right.to(flat.dtype).t()).view_as(weight)  # W H

    def unmerge_from(self, weight: torch.Tensor) -> torch.Tensor:
        left, right = self.factors()
        flat = weight.flatten(1)
        return (flat - (flat @ right.to(flat.dtype)) @ left.to(flat.dtype).t()).view_as(weight)  # W H^T

    def extra_repr(self) -> str:
        return f"r={self.r}, apply_GS={self.apply_GS}"


class HRALinear(HRAAdapter):
    """HRA on a dense layer: ``h = W H x + b``, computed as the layer below on ``H^T``-rotated inputs.

    ``hra_u: (in_features, r)``.
    """

    def forward(self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        left, right = self.factors()
        flat = x.to(left.dtype).reshape(-1, x.shape[-1])
        rotated = torch.addmm(flat, flat @ right, left.t(), alpha=-1)  # x H^T = x - (x R) L^T
        return inner(rotated.view(x.shape).to(x.dtype))


class HRAConv2d(HRAAdapter):
    """HRA on a 2-D convolution: the kernel, flattened to ``(out, in * kh * kw)``, becomes ``W H``.

    ``hra_u: (in_channels * kh * kw, r)``. The base convolution runs with the rotated kernel, so
    no other adapter can sit below this one on the same layer (its kernel would have to be rotated
    too, and its forward is opaque here): that is refused with an error, merging it first works.
    """

    needs_base = True

    def forward(
        self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor], base: nn.Module | None = None
    ) -> torch.Tensor:
        assert isinstance(base, nn.Conv2d)  # needs_base: the layer passes it
        if inner is not base:
            raise DeltatuneError(
                "An HRA adapter on a Conv2d rotates the base kernel itself, so it must be the only active "
                "unmerged adapter of its layer; merge the other adapters of this layer first, or activate "
                "them one at a time."
            )
        left, right = self.factors()
        flat = base.weight.to(left.dtype).flatten(1)
        weight = torch.addmm(flat, flat @ left, right.t(), alpha=-1).view(base.weight.shape)  # W H
        bias = base.bias.to(left.dtype) if base.bias is not None else None
        return base._conv_forward(x.to(left.dtype), weight, bias).to(x.dtype)


def create_hra(base: nn.Module, name: str, config: AdapterConfig) -> HRAAdapter:
    """Build the HRA adapter of ``base`` (the module ``name``)."""
    assert isinstance(config, HRAConfig)
    adapter_cls: type[HRAAdapter]
    if isinstance(base, nn.Linear):
        dim, adapter_cls = base.in_features, HRALinear
    elif isinstance(base, nn.Conv2d) and base.groups == 1:
        dim, adapter_cls = base.in_channels * math.prod(base.kernel_size), HRAConv2d
    else:
        detail = " with groups > 1" if isinstance(base, nn.Conv2d) else ""
        raise UnsupportedLayerError(
            f"HRA cannot adapt {name} ({type(base).__name__}{detail}); it supports nn.Linear and nn.Conv2d "
            "with groups=1. Remove it from target_modules or add it to exclude_modules."
        )
    if config.apply_GS and config.r > dim:
        raise ConfigError(
            f"HRA with apply_GS=True needs r <= {dim} (the dimension the reflections act on) for {name}, "
            f"got r={config.r}; lower r or set apply_GS=False."
        )
    with torch.device(weights.module_device(base)):
        adapter = adapter_cls(dim, config.r, config.apply_GS)
        adapter.reset(config.init_weights)
    return adapter.to(dtype=weights.adapter_dtype(base))


def supports_hra(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)
