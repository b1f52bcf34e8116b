"""One autograd node for ``base(x) + s * B A x`` on a plain frozen ``nn.Linear``.

The generic path runs the base layer and the adapter as separate ops: ``addmm`` copies the
base output to add the update, and backward adds the base and adapter input-gradients in a
separate full-size pass. Here the update is accumulated into the base output in place and the
input gradient is one ``addmm_`` into ``g @ W``; gradients are the same to rounding.
Used only when nothing can observe the difference (see :func:`applies`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _module

from deltatune import weights


class FusedLoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        a: torch.Tensor,
        b: torch.Tensor,
        scaling: float,
    ) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        out = torch.addmm(bias, x2, weight.t()) if bias is not None else x2 @ weight.t()
        h = x2 @ a.t()
        out.addmm_(h, b.t(), alpha=scaling)
        ctx.save_for_backward(x2, h, weight, a, b)
        ctx.scaling = scaling
        ctx.in_shape = x.shape
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x2, h, weight, a, b = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        gh = (g @ b).mul_(ctx.scaling)  # gradient at h = x A^T, (N, r)
        grad_x = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (g @ weight).addmm_(gh, a).view(ctx.in_shape)
        if ctx.needs_input_grad[3]:
            grad_a = gh.t() @ x2
        if ctx.needs_input_grad[4]:
            grad_b = (g.t() @ h).mul_(ctx.scaling)
        return grad_x, None, None, grad_a, grad_b, None


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


def output_is_free(base: Any, out: torch.Tensor) -> bool:
    """Writing into the base output in place is safe: autograd does not keep it (dense layers
    keep their input and weight, not their output) and nothing else holds it (no hooks)."""
    plain = type(base) is nn.Linear or weights.is_transposed_linear(base)
    return plain and unhooked(base) and out.is_contiguous()


def applies(base: nn.Module, x: torch.Tensor, a: torch.Tensor) -> bool:
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
