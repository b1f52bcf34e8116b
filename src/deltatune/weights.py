"""One place that knows how a base layer stores its weight.

Adapters compute their merge in a canonical layout — ``(out_features, in_features)`` for linear
layers (whatever the storage), ``(out, in, *kernel)`` for convolutions, ``(num, dim)`` for
embeddings — and read or write the base weight only through :func:`read_weight` and
:func:`write_weight`. GPT-2's ``Conv1D`` stores its weight transposed; quantized layers will
dequantize and requantize here; no method repeats that logic.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as _module

from deltatune.errors import MergeError

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def is_transposed_linear(module: nn.Module) -> bool:
    """GPT-2 style ``Conv1D``: a linear layer whose weight is stored as (in, out).

    Recognised by shape rather than by importing transformers, so the core stays light.
    """
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "weight")


def is_linear(module: nn.Module) -> bool:
    """A dense layer: ``nn.Linear`` or a transposed-storage Conv1D."""
    return isinstance(module, nn.Linear) or is_transposed_linear(module)


def layer_kind(module: nn.Module) -> str | None:
    """'linear', 'embedding', 'conv' or None for a layer type adapters cannot wrap."""
    if is_linear(module):
        return "linear"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if isinstance(module, _CONVS):
        return "conv"
    return None


def linear_features(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a dense layer."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if is_transposed_linear(module):
        in_features, out_features = base_weight(module).shape
        return int(in_features), int(out_features)
    raise TypeError(f"{type(module).__name__} is not a linear layer")


def base_weight(module: nn.Module) -> torch.Tensor:
    """The base layer's weight parameter as stored (no copy)."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise MergeError(f"{type(module).__name__} has no weight tensor to merge into.")
    return weight


def read_weight(module: nn.Module) -> torch.Tensor:
    """The weight in canonical layout (a view where possible, never a copy to write to)."""
    weight = base_weight(module)
    return weight.T if is_transposed_linear(module) else weight


def write_weight(module: nn.Module, canonical: torch.Tensor, *, safe: bool = False, what: str = "") -> None:
    """Store ``canonical`` (canonical layout) as the module's weight, in place, in its dtype.

    With ``safe`` the new weight is checked for NaN/Inf first and nothing is written if found.
    """
    weight = base_weight(module)
    if safe:
        check_finite(module, canonical, what)
    stored = canonical.T if is_transposed_linear(module) else canonical
    with torch.no_grad():
        weight.copy_(stored.to(weight.dtype))


def check_finite(module: nn.Module, new: torch.Tensor, what: str = "") -> None:
    """Refuse a merge result holding NaN or Inf (``safe_merge``), before anything is written."""
    if not torch.isfinite(new).all():
        raise MergeError(
            f"Merging {what or 'the adapter'} would put NaN or Inf into the weights of "
            f"{type(module).__name__}; nothing was merged. Check the adapter's weights."
        )


def base_bias(module: nn.Module) -> torch.Tensor | None:
    """The base layer's bias as stored, or None when it has none (the same layout for every kind)."""
    bias = getattr(module, "bias", None)
    return bias if isinstance(bias, torch.Tensor) else None


def write_bias(module: nn.Module, new: torch.Tensor) -> None:
    """Store ``new`` as the module's bias, in place, in its dtype (methods that scale outputs, e.g. IA3)."""
    bias = base_bias(module)
    if bias is None:
        raise MergeError(f"{type(module).__name__} has no bias to merge into.")
    with torch.no_grad():
        bias.copy_(new.to(bias.dtype))


def adapter_dtype(module: nn.Module) -> torch.dtype:
    """Adapters train in fp32 unless the base is in a wider float type (PEFT's autocast rule)."""
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dtype == torch.float64:
        return torch.float64
    return torch.float32


def module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters(recurse=False):
        return tensor.device
    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")


# ----------------------------------------------------------------------------- fused training paths
# Methods with a one-node autograd path (LoRA, DoRA, VeRA) may skip the base call only when nothing
# could observe it; these checks are the same for all of them.


def unhooked(base: nn.Module) -> bool:
    """No forward hook (on the module or global) could observe or change the base call, and no
    autocast region changes the dtypes of the ops (in-place ops are not autocast)."""
    weight = getattr(base, "weight", None)
    device = weight.device.type if isinstance(weight, torch.Tensor) else "cpu"
    if torch.is_autocast_enabled(device):
        return False
    return not (
        base._forward_hooks
        or base._forward_pre_hooks
        or _module._global_forward_hooks
        or _module._global_forward_pre_hooks
    )


def output_is_free(base: nn.Module, out: torch.Tensor) -> bool:
    """Writing into the base output in place is safe: autograd does not keep it (dense layers
    keep their input and weight, not their output) and nothing else holds it (no hooks)."""
    plain = type(base) is nn.Linear or is_transposed_linear(base)
    return plain and unhooked(base) and out.is_contiguous()


def merged_is_cheaper(tokens: int, fan_in: int, fan_out: int, r: int, grad: bool) -> bool:
    """For a low-rank update ``ΔW = B A`` (rank ``r``) of a dense layer: is ``x (W + ΔW)^T`` cheaper
    than ``x W^T + (x A^T) B^T``, in multiply-adds, for ``tokens`` rows of ``x``?

    Building ΔW costs ``fan_in * fan_out * r``; the factored way ``tokens * r * (fan_in + fan_out)``
    in forward. With autograd the factored way also needs ``g B`` and ``(.) A`` in backward, where
    the merged way reuses ``g (W + ΔW)``.
    """
    if grad:
        return fan_in * fan_out < tokens * (fan_in + 2 * fan_out)
    return fan_in * fan_out < tokens * (fan_in + fan_out)


def fusable_linear(base: nn.Module, x: torch.Tensor, a: torch.Tensor) -> bool:
    """True when the fused node computes exactly what base(x) + adapter would.

    The base must be a plain ``nn.Linear`` (not a subclass: quantized layers override forward)
    without hooks, frozen, in the adapter's dtype; any hook could observe or change the
    separate base call this path skips.
    """
    if type(base) is not nn.Linear or not unhooked(base):
        return False
    weight, bias = base.weight, base.bias
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        return False
    return x.dtype == weight.dtype == a.dtype and x.shape[-1] == weight.shape[1]
