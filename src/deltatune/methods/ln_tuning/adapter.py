"""LN tuning: a trainable copy of a normalisation layer replaces it in the forward.

Zhao et al., "Tuning LayerNorm in Attention: Towards Efficient Multi-Modal LLM Finetuning" (2023).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from deltatune import weights
from deltatune.errors import MergeError, UnsupportedLayerError
from deltatune.integrations.transformers import is_norm
from deltatune.layer import Adapter
from deltatune.methods.ln_tuning.config import LNTuningConfig

LAYER_TYPES = ("LayerNorm", "RMSNorm", "GroupNorm", "any *Norm module whose parameters are vectors (LlamaRMSNorm, ...)")


class LNTuningAdapter(Adapter):
    """A trainable copy of one norm layer, used in its place: ``h = LN'(x)``.

    Update rule: the copy starts equal to the base norm (``gamma' = gamma``, ``beta' = beta``) and
    only its affine parameters train; the layer below (``inner``) is not called, so every stacked
    adapter under this one is bypassed, and a norm called with extra arguments gets only ``x``.
    Shapes: the base norm's own, e.g. ``weight: (dim,)``, ``bias: (dim,)``. The copy lives under
    ``ln_tuning_layers`` (PEFT's checkpoint name) and runs in fp32 on an fp32 copy of ``x``.
    Merging copies every tuned parameter into the base norm; unmerging restores the originals,
    which the merge keeps.
    """

    merges_module = True

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.ln_tuning_layers = copy.deepcopy(base).to(dtype=weights.adapter_dtype(base))
        self._originals: dict[str, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        dtype = next(self.ln_tuning_layers.parameters()).dtype
        return self.ln_tuning_layers(x.to(dtype)).to(x.dtype)

    def merge_module(self, base: nn.Module, safe: bool = False) -> None:
        tuned = dict(self.ln_tuning_layers.named_parameters())
        own = dict(base.named_parameters())
        if set(tuned) != set(own):
            raise MergeError(
                f"The tuned copy has parameters {sorted(tuned)} but {type(base).__name__} has {sorted(own)}; "
                "the base norm changed since the adapter was made. Re-create the adapter."
            )
        if safe:
            for name, value in tuned.items():
                weights.check_finite(base, value.detach(), what=f"the tuned {name}")
        self._originals = {name: p.detach().clone() for name, p in own.items()}
        with torch.no_grad():
            for name, param in own.items():
                param.copy_(tuned[name].detach().to(param.dtype))

    def unmerge_module(self, base: nn.Module) -> None:
        if self._originals is None:
            return
        with torch.no_grad():
            for name, param in base.named_parameters():
                param.copy_(self._originals[name])
        self._originals = None


def supports_ln_tuning(module: nn.Module) -> bool:
    return is_norm(module)


def create_ln_tuning(base: nn.Module, name: str, config: LNTuningConfig) -> LNTuningAdapter:
    """A trainable copy of the norm ``base`` (the module ``name`` of the model)."""
    if not is_norm(base):
        raise UnsupportedLayerError(
            f"LN tuning cannot adapt {name} ({type(base).__name__}); it tunes normalisation layers: "
            f"{', '.join(LAYER_TYPES)}. Remove it from target_modules or add it to exclude_modules."
        )
    # deepcopy keeps the base's device, so on "meta" nothing is allocated.
    return LNTuningAdapter(base)
