"""Bottleneck adapters: a small down-project / activate / up-project block on a module's output.

Houlsby et al., "Parameter-Efficient Transfer Learning for NLP" (2019); Pfeiffer et al.,
"AdapterFusion: Non-Destructive Task Composition for Transfer Learning" (2021); He et al.,
"Towards a Unified View of Parameter-Efficient Transfer Learning" (2022, parallel adapters).

This is a deltatune method: its checkpoints carry peft_type ``DELTATUNE_BOTTLENECK`` and the
tensor names ``adapter_down.{weight,bias}`` / ``adapter_up.{weight,bias}``; Hugging Face PEFT
does not know the type and cannot load them. The block is non-linear, so it cannot be merged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from deltatune import weights
from deltatune.errors import MergeError, UnsupportedLayerError
from deltatune.integrations.transformers import is_norm
from deltatune.layer import Adapter
from deltatune.methods.bottleneck.config import BottleneckConfig

LAYER_TYPES = ("Linear", "GPT-2 Conv1D", "Embedding (sequential only)", "norm layers over the last dimension")
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


class BottleneckAdapter(Adapter):
    """A bottleneck block added to a module's output ``f(x)``.

    Update rule: sequential ``h = f(x) + s * U act(D f(x) + b_D) + s * b_U``; parallel
    ``h = f(x) + s * U act(D x + b_D) + s * b_U``. Shapes: ``D: (m, d_in)`` with ``d_in`` the
    output features (sequential) or input features (parallel), ``U: (d_out, m)``, ``m`` the
    bottleneck size; ``U = 0, b_U = 0`` at init, so the adapter starts as the identity. The
    module must return one tensor whose last dimension is ``d_out``.
    """

    merges_module = True  # merge_module refuses, before any weight is read

    def __init__(
        self, d_in: int, d_out: int, size: int, non_linearity: str, parallel: bool, scaling: float, name: str
    ) -> None:
        super().__init__()
        self.adapter_down = nn.Linear(d_in, size)
        self.adapter_up = nn.Linear(size, d_out)
        self.non_linearity = non_linearity
        self.parallel = parallel
        self.scaling = scaling
        self.name = name
        self.features = d_out

    def reset(self, init_weights: bool) -> None:
        if init_weights:
            nn.init.zeros_(self.adapter_up.weight)
            nn.init.zeros_(self.adapter_up.bias)

    def forward(self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        out = inner(x)
        if not isinstance(out, torch.Tensor) or out.shape[-1] != self.features:
            got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            raise UnsupportedLayerError(
                f"The bottleneck adapter on {self.name} needs one output tensor with {self.features} features in "
                f"the last dimension, but the module returned {got}. Target another module."
            )
        source = x if self.parallel else out
        down = self.adapter_down.weight
        hidden = ACTIVATIONS[self.non_linearity](self.adapter_down(source.to(down.dtype)))
        up = self.adapter_up
        if out.dtype == down.dtype:
            # One fused GEMM for out + s * hidden @ U^T, then s * b_U in place (addmm keeps no output).
            flat = torch.addmm(
                out.reshape(-1, self.features), hidden.reshape(-1, hidden.shape[-1]), up.weight.t(), alpha=self.scaling
            )
            return flat.add_(up.bias, alpha=self.scaling).view(out.shape)
        return out + (up(hidden) * self.scaling).to(out.dtype)

    def merge_module(self, base: nn.Module, safe: bool = False) -> None:
        raise MergeError(
            f"Bottleneck adapters cannot be merged: the block on {self.name} is non-linear (an activation "
            "between its projections), so no weight change reproduces it. Keep the adapter unmerged "
            "(it runs on top of the base model), or train a mergeable method such as LoRA."
        )

    def unmerge_module(self, base: nn.Module) -> None:
        return None  # never merged

    def extra_repr(self) -> str:
        kind = "parallel" if self.parallel else "sequential"
        return f"{kind}, {self.non_linearity}, scaling={self.scaling:g}"


def _features(base: nn.Module) -> tuple[int | None, int] | None:
    """(input features or None for token ids, output features), or None if unsupported."""
    if weights.is_linear(base):
        return weights.linear_features(base)
    if isinstance(base, nn.Embedding):
        return None, base.embedding_dim
    if is_norm(base) and not isinstance(base, nn.GroupNorm):
        size = next(p for p in base.parameters(recurse=False)).numel()
        return size, size
    return None


def supports_bottleneck(module: nn.Module) -> bool:
    return _features(module) is not None


def create_bottleneck(base: nn.Module, name: str, config: BottleneckConfig) -> BottleneckAdapter:
    """The bottleneck adapter for ``base`` (the module ``name`` of the model)."""
    found = _features(base)
    if found is None:
        raise UnsupportedLayerError(
            f"A bottleneck adapter cannot wrap {name} ({type(base).__name__}): it needs a module whose output's "
            f"last dimension is its feature size ({', '.join(LAYER_TYPES)}). Target such a module instead."
        )
    d_in, d_out = found
    parallel = config.placement == "parallel"
    if parallel and d_in is None:
        raise UnsupportedLayerError(
            f"A parallel bottleneck adapter cannot wrap {name} ({type(base).__name__}): its input is token ids, "
            "not features. Use placement='sequential' for embeddings."
        )
    source = d_in if parallel and d_in is not None else d_out
    with torch.device(weights.module_device(base)):
        adapter = BottleneckAdapter(
            source, d_out, config.size_for(d_out), config.non_linearity, parallel, float(config.scaling), name
        )
        adapter.reset(config.init_weights)
    return adapter.to(dtype=weights.adapter_dtype(base))
