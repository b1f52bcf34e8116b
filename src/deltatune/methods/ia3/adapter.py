"""(IA)³ adapters for dense (Linear, GPT-2 Conv1D) and convolution layers.

Liu et al., "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context
Learning" (2022).

Update rule: a learned vector ``l`` rescales the layer's output, ``h = l ⊙ (W0 x + b)``, or, on
feed-forward layers, its input, ``h = W0 (l ⊙ x) + b``. Merging folds ``l`` into the weight's
rows (and the bias) or its input columns; unmerging divides it out again.

Shapes (PEFT's checkpoint name ``ia3_l``): dense ``(out, 1)``, or ``(1, in)`` on feed-forward
layers; convolution ``(1, out, 1, ...)``, or ``(1, in, 1, ...)`` on feed-forward layers, with
one trailing 1 per kernel dimension.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from deltatune import weights
from deltatune.errors import UnsupportedLayerError
from deltatune.layer import Adapter
from deltatune.methods.ia3.config import IA3Config

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
LAYER_TYPES = ("Linear", "GPT-2 Conv1D", "Conv1d", "Conv2d", "Conv3d")


class IA3Adapter(Adapter):
    """(IA)³ on one layer: ``h = l ⊙ f(x)``, or ``h = f(l ⊙ x)`` when ``is_feedforward``."""

    def __init__(self, base: nn.Module, is_feedforward: bool) -> None:
        super().__init__()
        self.is_feedforward = is_feedforward
        canonical = weights.read_weight(base).shape  # (out, in) or (out, in / groups, *kernel)
        self.groups = getattr(base, "groups", 1) if isinstance(base, _CONVS) else 1
        spatial = len(canonical) - 2
        size = canonical[1] * self.groups if is_feedforward else canonical[0]
        if spatial:
            self.ia3_l = nn.Parameter(torch.ones(1, size, *([1] * spatial)))
        else:
            self.ia3_l = nn.Parameter(torch.ones((1, size) if is_feedforward else (size, 1)))
        # How ``l`` broadcasts over activations: the last dim (dense) or the channel dim (conv,
        # batched or not: (C, 1, ...) fits both (N, C, ...) and (C, ...)).
        self._act_shape = (size, *([1] * spatial)) if spatial else (size,)

    def reset(self, init: bool) -> None:
        if init:
            nn.init.ones_(self.ia3_l)
        else:
            nn.init.normal_(self.ia3_l)

    def forward(self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        scale = self.ia3_l.view(self._act_shape)
        if self.is_feedforward:
            return inner((x.to(scale.dtype) * scale).to(x.dtype))
        out = inner(x)
        return (out.to(scale.dtype) * scale).to(out.dtype)

    # ----------------------------------------------------------------------------- merging
    def _weight_scale(self, weight: torch.Tensor) -> torch.Tensor:
        """``l`` shaped to multiply the canonical weight: its rows, or its input columns."""
        vector = self.ia3_l.detach().flatten().to(weight.dtype)
        trailing = [1] * (weight.dim() - 2)
        if not self.is_feedforward:
            return vector.view(-1, 1, *trailing)
        if self.groups == 1:
            return vector.view(1, -1, *trailing)
        # Grouped convolution: output channel o of group g reads inputs g * (in / groups) + j.
        out_f, in_per_group = weight.shape[:2]
        per_group = vector.view(self.groups, 1, in_per_group, *trailing)
        return per_group.expand(self.groups, out_f // self.groups, in_per_group, *trailing).reshape(
            out_f, in_per_group, *trailing
        )

    def merge_into(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self._weight_scale(weight)

    def unmerge_from(self, weight: torch.Tensor) -> torch.Tensor:
        # A zero entry erased its row or column at merge: nothing to divide back, it stays zero.
        scale = self._weight_scale(weight)
        return torch.where(scale != 0, weight / scale, weight)

    def merge_bias(self, bias: torch.Tensor) -> torch.Tensor:
        if self.is_feedforward:
            return bias  # input scaling leaves the bias alone
        return bias * self.ia3_l.detach().flatten().to(bias.dtype)

    def unmerge_bias(self, bias: torch.Tensor) -> torch.Tensor:
        if self.is_feedforward:
            return bias
        scale = self.ia3_l.detach().flatten().to(bias.dtype)
        return torch.where(scale != 0, bias / scale, bias)

    def extra_repr(self) -> str:
        return f"feedforward={self.is_feedforward}, size={self.ia3_l.numel()}"


def supports_ia3(module: nn.Module) -> bool:
    return weights.is_linear(module) or isinstance(module, _CONVS)


def create_ia3(base: nn.Module, name: str, config: IA3Config) -> IA3Adapter:
    """Build the (IA)³ adapter for ``base`` (the module ``name`` of the model)."""
    if not supports_ia3(base):
        raise UnsupportedLayerError(
            f"IA3 cannot adapt {name} ({type(base).__name__}); it supports {', '.join(LAYER_TYPES)}. "
            "Remove it from target_modules or add it to exclude_modules."
        )
    # Build on the base's device: on "meta" nothing is allocated, so injection stays fast.
    with torch.device(weights.module_device(base)):
        adapter = IA3Adapter(base, config.is_feedforward(name))
        adapter.reset(config.init_ia3_weights)
    return adapter.to(dtype=weights.adapter_dtype(base))
