"""What LoHa and LoKr share (the LyCORIS family): config fields, dropout, applying a delta weight.

Both methods build a whole delta weight ``ΔW`` (in the base weight's own shape) from small
factors once per call and run it the way the base layer runs its weight: ``F.linear`` for a
dense layer, ``F.conv1d``/``F.conv2d`` with the base's stride, padding, dilation and groups for a
convolution. The forward is ``inner(x) + op(x, ΔW)``; right on a plain base layer of the
adapter's dtype it is the same sum computed as one ``op(x, W0 + ΔW) + b``. Merging adds the same
``ΔW``, so merged and unmerged outputs agree.

Training-time regularisers (as PEFT defines them):
- module dropout: with probability ``module_dropout`` the adapter is skipped for the whole call;
- rank dropout: each output row of ``ΔW`` is zeroed with probability ``rank_dropout``, and the
  kept rows are divided by the kept fraction (LoKr only with ``rank_dropout_scale``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from deltatune import weights
from deltatune.config import AdapterConfig, _help, pattern_value
from deltatune.errors import ConfigError, UnsupportedLayerError
from deltatune.layer import Adapter

LAYER_TYPES = ("Linear", "Conv1d", "Conv2d")
# Base types whose forward is exactly their functional op (subclasses may do more, e.g. quantize).
_FUSABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass
class LycorisConfig(AdapterConfig):
    """Fields LoHa and LoKr share, with PEFT's names and defaults."""

    # Allowed values of init_weights, set by each method.
    init_modes: ClassVar[tuple[Any, ...]] = (True, False)

    r: int = _help("Rank of the factors.", 8)
    alpha: float = _help("Scale numerator: the update is multiplied by alpha / r.", 8)
    rank_dropout: float = _help("Training only: probability of dropping each output row of the update.", 0.0)
    module_dropout: float = _help("Training only: probability of skipping the whole adapter for a call.", 0.0)
    use_effective_conv2d: bool = _help(
        "Convolutions with kernel > 1: factor the kernel through a small (r, r, *kernel) core (FedPara Prop. 3).",
        False,
    )
    init_weights: bool | str = _help("True: the update starts at zero (the base model); False: random factors.", True)
    rank_pattern: dict[str, int] = _help("Per-module rank: {regex on module name suffix: r}.", factory=dict)
    alpha_pattern: dict[str, float] = _help("Per-module alpha: {regex on module name suffix: alpha}.", factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            raise ConfigError(f"{name}.r must be a positive integer, got {self.r!r}.")
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or not math.isfinite(self.alpha):
            raise ConfigError(f"{name}.alpha must be a finite number, got {self.alpha!r}.")
        if not isinstance(self.rank_dropout, (int, float)) or not 0.0 <= self.rank_dropout < 1.0:
            raise ConfigError(f"{name}.rank_dropout must be in [0, 1), got {self.rank_dropout!r}.")
        if not isinstance(self.module_dropout, (int, float)) or not 0.0 <= self.module_dropout <= 1.0:
            raise ConfigError(f"{name}.module_dropout must be in [0, 1], got {self.module_dropout!r}.")
        if type(self.init_weights) not in (bool, str) or self.init_weights not in self.init_modes:
            raise ConfigError(
                f"{name}.init_weights={self.init_weights!r} is not supported; use one of {list(self.init_modes)}."
            )
        for field_name, pattern in (("rank_pattern", self.rank_pattern), ("alpha_pattern", self.alpha_pattern)):
            if not isinstance(pattern, dict):
                raise ConfigError(f"{name}.{field_name} must be a dict {{pattern: value}}, got {pattern!r}.")
            for key, value in pattern.items():
                try:
                    re.compile(key)
                except re.error as exc:
                    raise ConfigError(f"{field_name} key {key!r} is not a valid regex: {exc}.") from exc
                if field_name == "rank_pattern" and (not isinstance(value, int) or value <= 0):
                    raise ConfigError(f"rank_pattern[{key!r}] must be a positive integer, got {value!r}.")

    def rank_and_alpha(self, module_name: str) -> tuple[int, float]:
        """The rank and alpha for one module, after rank_pattern / alpha_pattern."""
        r = pattern_value(self.rank_pattern, module_name, self.r)
        alpha = pattern_value(self.alpha_pattern, module_name, self.alpha)
        return int(r), float(alpha)


def supports_lycoris(module: nn.Module) -> bool:
    """Dense ``nn.Linear`` and ``nn.Conv1d``/``nn.Conv2d`` (the layers PEFT's LoHa and LoKr adapt)."""
    return isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d))


def check_layer(base: nn.Module, name: str, method: str) -> None:
    if not supports_lycoris(base):
        raise UnsupportedLayerError(
            f"{method} cannot adapt {name} ({type(base).__name__}); it supports {', '.join(LAYER_TYPES)}. "
            "Remove it from target_modules or add it to exclude_modules (LoRA adapts more layer types)."
        )


class LycorisAdapter(Adapter):
    """The shared half of a LoHa / LoKr adapter: geometry of the base, dropout, the forward.

    Subclasses build ``delta_weight()`` in the base weight's shape: ``(out, in)`` for a dense
    layer, ``(out, in / groups, *kernel)`` for a convolution.
    """

    needs_base = True  # to fold ΔW into the base's own op when the adapter sits right on it
    additive = True  # base(x) + op(x, ΔW): commutes with other additive adapters when merging

    def __init__(self, base: nn.Module, r: int, alpha: float, rank_dropout: float, module_dropout: float) -> None:
        super().__init__()
        self.r = r
        self.alpha = alpha
        self.scaling = alpha / r
        self.rank_dropout = float(rank_dropout)
        self.module_dropout = float(module_dropout)
        self.rescale_ranks = True  # LoKr makes this optional (rank_dropout_scale)
        self.shape: tuple[int, ...] = tuple(weights.read_weight(base).shape)
        # Plain values copied from the base (never the module itself): how it applies its weight.
        self._conv: Callable[..., torch.Tensor] | None = None
        if isinstance(base, (nn.Conv1d, nn.Conv2d)):
            self._conv = F.conv1d if isinstance(base, nn.Conv1d) else F.conv2d
            self._stride = base.stride
            self._padding: Any = base.padding
            self._dilation = base.dilation
            self._groups = base.groups
            self._padding_mode = base.padding_mode
            self._pad_twice = tuple(base._reversed_padding_repeated_twice)

    @property
    def kernel(self) -> tuple[int, ...]:
        """The convolution's kernel size; () for a dense layer."""
        return self.shape[2:]

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor], base: nn.Module
    ) -> torch.Tensor:
        if self.training and self.module_dropout > 0 and float(torch.rand(())) <= self.module_dropout:
            return inner(x)
        delta = self.delta_weight()
        if self.training and self.rank_dropout > 0:
            delta = drop_rows(delta, self.rank_dropout, self.rescale_ranks)
        if inner is base and _fusable(base, x.dtype, delta.dtype):
            # Directly on a plain base layer: op(x, W0 + ΔW) + b is base(x) + op(x, ΔW) in one matmul
            # (or convolution) instead of two, forward and backward.
            return self.apply_weight(x, weights.base_weight(base) + delta, weights.base_bias(base))
        out = inner(x)
        return out + self.apply_weight(x.to(delta.dtype), delta).to(out.dtype)

    def apply_weight(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` through the base layer's operation with ``weight`` (and ``bias``) in place of its own."""
        if self._conv is None:
            return F.linear(x, weight, bias)
        if self._padding_mode != "zeros":
            x = F.pad(x, self._pad_twice, mode=self._padding_mode)
            return self._conv(x, weight, bias, self._stride, 0, self._dilation, self._groups)
        return self._conv(x, weight, bias, self._stride, self._padding, self._dilation, self._groups)

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling:g}, shape={self.shape}"


def _fusable(base: nn.Module, x_dtype: torch.dtype, delta_dtype: torch.dtype) -> bool:
    """Whether ``base(x)`` is exactly its functional op on its own weight, in the adapter's dtype."""
    return (
        type(base) in _FUSABLE
        and x_dtype == delta_dtype == weights.base_weight(base).dtype
        and not base._forward_hooks
        and not base._forward_pre_hooks
    )


def drop_rows(weight: torch.Tensor, p: float, rescale: bool) -> torch.Tensor:
    """Zero each output row (dim 0) of ``weight`` with probability ``p``; ``rescale`` divides the
    kept rows by the kept fraction of this draw (PEFT's rank dropout; a draw that drops every row
    gives a zero update here rather than NaN)."""
    keep = (torch.rand(weight.shape[0], device=weight.device) > p).to(weight.dtype)
    if rescale:
        keep = keep / keep.mean().clamp_min(torch.finfo(keep.dtype).tiny)
    return weight * keep.view(-1, *([1] * (weight.dim() - 1)))


def kaiming_(*tensors: torch.Tensor) -> None:
    """PEFT's default factor init: Kaiming-uniform with a = sqrt(5) (as nn.Linear's weight)."""
    for tensor in tensors:
        nn.init.kaiming_uniform_(tensor, a=math.sqrt(5))


def tucker(core: torch.Tensor, out_factor: torch.Tensor, in_factor: torch.Tensor) -> torch.Tensor:
    """A kernel from a Tucker core: ``core (r, r, kh, kw)``, ``out_factor (r, out)``,
    ``in_factor (r, in)`` -> ``(out, in, kh, kw)``."""
    return torch.einsum("abhw,ao,bi->oihw", core, out_factor, in_factor)
