"""Bias tuning: a trainable bias delta on the output of a layer (PEFT's BEFT).

Ben Zaken et al., "BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked
Language-models" (2022) trains every bias term; "BEFT: Bias-Efficient Fine-Tuning of Language
Models" (arXiv 2509.15974, 2025) trains chosen ones. The base bias itself never trains, so disabling
the adapter gives exactly the base model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from deltatune import weights
from deltatune.errors import MergeError, UnsupportedLayerError
from deltatune.integrations.transformers import is_norm
from deltatune.layer import Adapter
from deltatune.methods.beft.config import BeftConfig

LAYER_TYPES = ("Linear", "GPT-2 Conv1D", "Conv1d/2d/3d", "norm layers (LayerNorm, GroupNorm, ...)")
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class BiasDelta(Adapter):
    """A trainable bias added to a layer's output.

    Update rule: ``h = f(x) + d``, broadcast over the channel dimension (the last one for dense
    layers and layer norms, dimension 1 for convolutions and GroupNorm). Shape: ``d: (1, channels)``
    (PEFT's ``beft_bias``), zero at init. Merging adds ``d`` to the base bias (a layer without a
    bias cannot be merged); unmerging restores the bias the merge kept.
    """

    merges_module = True

    def __init__(self, channels: int, channel_dim: int, name: str) -> None:
        super().__init__()
        self.beft_bias = nn.Parameter(torch.zeros(1, channels))
        self.channel_dim = channel_dim  # 1 or -1
        self.name = name
        self._original: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        out = inner(x)
        delta = self.beft_bias.view(-1)
        if self.channel_dim == 1:
            delta = delta.view(-1, *([1] * (out.dim() - 2)))
        return (out + delta).to(out.dtype)

    def merge_module(self, base: nn.Module, safe: bool = False) -> None:
        bias = weights.base_bias(base)
        if bias is None:
            raise MergeError(
                f"The bias-tuning adapter on {self.name} cannot be merged: {type(base).__name__} has no bias to "
                "merge into. Keep the adapter unmerged, or leave bias-free layers out of target_modules."
            )
        new = bias.detach().to(self.beft_bias.dtype) + self.beft_bias.detach().view(-1)
        if safe:
            weights.check_finite(base, new, what=f"the bias delta of {self.name}")
        self._original = bias.detach().clone()
        with torch.no_grad():
            bias.copy_(new.to(bias.dtype))

    def unmerge_module(self, base: nn.Module) -> None:
        bias = weights.base_bias(base)
        if bias is None or self._original is None:
            return
        with torch.no_grad():
            bias.copy_(self._original)
        self._original = None


def _channels(base: nn.Module) -> tuple[int, int] | None:
    """(channels, channel dimension) of a layer bias tuning supports, else None."""
    if weights.is_linear(base):
        return weights.linear_features(base)[1], -1
    if isinstance(base, _CONVS):
        return base.out_channels, 1
    if is_norm(base):
        size = next(p for p in base.parameters(recurse=False)).numel()
        return size, 1 if isinstance(base, nn.GroupNorm) else -1
    return None


def supports_beft(module: nn.Module) -> bool:
    return _channels(module) is not None


def create_beft(base: nn.Module, name: str, config: BeftConfig) -> BiasDelta:
    """The bias-tuning adapter for ``base`` (the module ``name`` of the model)."""
    found = _channels(base)
    if found is None:
        raise UnsupportedLayerError(
            f"Bias tuning cannot adapt {name} ({type(base).__name__}); it supports {', '.join(LAYER_TYPES)}. "
            "Remove it from target_modules or add it to exclude_modules."
        )
    channels, channel_dim = found
    with torch.device(weights.module_device(base)):
        adapter = BiasDelta(channels, channel_dim, name)
        if not config.init_weights:
            nn.init.normal_(adapter.beft_bias)
    return adapter.to(dtype=weights.adapter_dtype(base))
