"""VeRA adapters for dense layers (nn.Linear and GPT-2 Conv1D).

Kopiczko, Blankevoort and Asano, "VeRA: Vector-based Random Matrix Adaptation" (ICLR 2024).

Update rule: ``h = W0 x + Λ_b B Λ_d A dropout(x)`` where ``A: (r, in_max)`` and ``B: (out_max, r)``
are frozen random projections shared by every layer of one adapter (each layer uses the slices
``A[:, :in]`` and ``B[:out, :]``), and ``Λ_b = diag(vera_lambda_b)`` with ``vera_lambda_b: (out,)``
and ``Λ_d = diag(vera_lambda_d)`` with ``vera_lambda_d: (r,)`` are the only trained tensors.

The projections come from a CPU ``torch.Generator`` seeded with ``projection_prng_key``: A first,
then B, each Kaiming-uniform over its fan-in (bound ``sqrt(3) * sqrt(2) / sqrt(fan_in)``), with
``in_max`` / ``out_max`` the largest dimensions among the adapter's targets. That is PEFT's
recipe, so a checkpoint saved without projections rebuilds the same ones in either library.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deltatune import weights
from deltatune.config import AdapterConfig
from deltatune.errors import UnsupportedLayerError
from deltatune.layer import Adapter
from deltatune.methods.vera.config import VeraConfig
from deltatune.methods.vera.fused import FusedVeraLinear


class VeraProjections(nn.Module):
    """The frozen projections one adapter shares across its layers: ``vera_A (r, in_max)``, ``vera_B (out_max, r)``.

    They are buffers, persistent only when the adapter saves them (``save_projection``). Built on
    the meta device they stay empty until materialised (``to_empty``), then are drawn from the seed.
    """

    vera_A: torch.Tensor
    vera_B: torch.Tensor

    def __init__(self, r: int, in_max: int, out_max: int, seed: int, persistent: bool, dtype: torch.dtype) -> None:
        super().__init__()
        self.seed = seed
        self.register_buffer("vera_A", torch.empty(r, in_max, dtype=dtype), persistent=persistent)
        self.register_buffer("vera_B", torch.empty(out_max, r, dtype=dtype), persistent=persistent)
        if not self.vera_A.is_meta:
            self.draw()

    def draw(self) -> None:
        """A, then B, Kaiming-uniform from one CPU generator seeded with ``seed`` (PEFT's recipe)."""
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        with torch.no_grad():
            for buffer in (self.vera_A, self.vera_B):
                bound = math.sqrt(3.0) * (math.sqrt(2.0) / math.sqrt(buffer.shape[1]))  # ReLU gain / sqrt(fan_in)
                values = torch.empty(buffer.shape, device="cpu").uniform_(-bound, bound, generator=generator)
                buffer.copy_(values)

    def _apply(self, fn: Any, recurse: bool = True) -> VeraProjections:
        was_meta = self.vera_A.is_meta
        super()._apply(fn, recurse)
        if was_meta and not self.vera_A.is_meta:  # materialised (to_empty): the values are garbage
            self.draw()
        return self


def create_vera_projections(
    model: nn.Module, config: AdapterConfig, bases: dict[str, nn.Module]
) -> VeraProjections | None:
    """The shared projections, sized for the largest target; None when no target is a dense layer."""
    assert isinstance(config, VeraConfig)
    dense = [base for base in bases.values() if supports_vera(base)]
    if not dense:
        return None  # the per-layer factory names the unsupported layers
    dims = [weights.linear_features(base) for base in dense]
    in_max, out_max = max(d[0] for d in dims), max(d[1] for d in dims)
    with torch.device(weights.module_device(dense[0])):
        return VeraProjections(
            config.r,
            in_max,
            out_max,
            config.projection_prng_key,
            config.save_projection,
            weights.adapter_dtype(dense[0]),
        )


class VeraLinear(Adapter):
    """VeRA on a dense layer: ``h = W0 x + Λ_b B[:out] Λ_d A[:, :in] dropout(x)``.

    Trained: ``vera_lambda_b (out,)``, ``vera_lambda_d (r,)``. The shared ``A``/``B`` are read from
    the adapter's :class:`VeraProjections` at every call (never cached: sharding may replace them);
    that module is referenced, not registered, so it is saved and moved once, by the DeltaModel.
    On a plain frozen nn.Linear without active dropout the layer and the adapter run as one
    autograd node (``fused.py``).
    """

    additive = True  # W0 x + ΔW x: commutes with other additive adapters when merging
    needs_base = True  # the fused path (fused.py) runs a plain nn.Linear base itself

    def __init__(self, in_features: int, out_features: int, r: int, dropout: float, shared: VeraProjections) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.r = r
        self.vera_dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.vera_lambda_b = nn.Parameter(torch.ones(out_features))
        self.vera_lambda_d = nn.Parameter(torch.randn(r))
        object.__setattr__(self, "_shared", shared)  # a reference, not a submodule

    def reset(self, init: bool, d_initial: float) -> None:
        if not init:
            return  # lambda_b = 1, lambda_d ~ N(0, 1): random, non-trivial
        with torch.no_grad():
            self.vera_lambda_d.fill_(d_initial)
            self.vera_lambda_b.zero_()

    def _slices(self) -> tuple[torch.Tensor, torch.Tensor]:
        shared: VeraProjections = self.__dict__["_shared"]
        return shared.vera_A[:, : self.in_features], shared.vera_B[: self.out_features, :]

    def forward(
        self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor], base: nn.Module | None = None
    ) -> torch.Tensor:
        a, b = self._slices()
        lambda_b, lambda_d = self.vera_lambda_b, self.vera_lambda_d
        no_dropout = isinstance(self.vera_dropout, nn.Identity) or not self.vera_dropout.training
        if inner is base and no_dropout and weights.fusable_linear(base, x, a):
            # The base itself runs below (no adapter stacked under this one): one node (fused.py).
            return FusedVeraLinear.apply(x, base.weight, base.bias, a, b, lambda_b, lambda_d)
        out = inner(x)
        h = F.linear(F.linear(self.vera_dropout(x.to(lambda_d.dtype)), a) * lambda_d, b)  # B Λ_d A x: (..., out)
        # Λ_b scales h rather than B: folding it into B would cost one more GEMM in backward (for Λ_b's grad).
        return out + (lambda_b * h).to(out.dtype)

    def delta_weight(self) -> torch.Tensor:
        a, b = self._slices()
        return (b * self.vera_lambda_b.unsqueeze(1)) @ (a * self.vera_lambda_d.unsqueeze(1))

    def extra_repr(self) -> str:
        return f"r={self.r}, in={self.in_features}, out={self.out_features}"


def create_vera(base: nn.Module, name: str, config: AdapterConfig, shared: VeraProjections | None = None) -> VeraLinear:
    """Build the VeRA adapter of ``base`` (the module ``name``) on the adapter's shared projections."""
    assert isinstance(config, VeraConfig)
    if not supports_vera(base):
        raise UnsupportedLayerError(
            f"VeRA cannot adapt {name} ({type(base).__name__}); it supports nn.Linear and GPT-2 Conv1D. "
            "Remove it from target_modules or add it to exclude_modules."
        )
    assert shared is not None  # built by create_vera_projections whenever a target is a dense layer
    in_features, out_features = weights.linear_features(base)
    with torch.device(weights.module_device(base)):
        adapter = VeraLinear(in_features, out_features, config.r, config.vera_dropout, shared)
        adapter.reset(config.init_weights, config.d_initial)
    return adapter.to(dtype=weights.adapter_dtype(base))


def supports_vera(module: nn.Module) -> bool:
    return weights.is_linear(module)
