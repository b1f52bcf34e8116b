"""One autograd node for ``base(x) + s * B A x`` on a plain frozen ``nn.Linear``.

The generic path runs the base layer and the adapter as separate ops: ``addmm`` copies the
base output to add the update, and backward adds the base and adapter input-gradients in a
separate full-size pass. Here the update is accumulated into the base output in place and the
input gradient is one ``addmm_`` into ``g @ W``; gradients are the same to rounding.
Used only when nothing can observe the difference (see :func:`deltatune.weights.fusable_linear`).
"""

from __future__ import annotations

from typing import Any

import torch


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
