"""One autograd node for VeRA on a plain frozen ``nn.Linear``: ``y = x W0^T + bias + x (Λ_b B Λ_d A)^T``.

Shapes: x (N, in) (leading dims flattened), W0 (out, in), A (r, in) and B (out, r) the layer's
slices of the shared frozen projections, λ_b (out,), λ_d (r,). With VeRA's large ranks
(r = 256 by default) the adapter's products cost as much as the base layer's, so the node picks,
from the shapes alone, the cheaper of two exact ways to compute the same thing:

- factored: ``y = x W0^T + (x A^T Λ_d)(Λ_b B)^T``, accumulated in place into the base product;
- merged: ``y = x (W0 + (Λ_b B)(Λ_d A))^T`` when ``in*out`` is small next to the tokens ``N``,
  which also makes the input gradient a single ``g (W0 + ΔW)``.

Both take the two vector gradients from one small product ``G = g^T (x A^T)`` (out, r):
``dλ_b = (G ∘ B) λ_d`` and ``dλ_d = λ_b^T (G ∘ B)``, so neither keeps an (N, out) tensor for
backward. The generic path instead runs the base and four more ops, adds the adapter's output
and input gradient to the base ones in extra full-size passes, and reads λ_b's gradient from a
saved (N, out) product. Results agree to rounding.
"""

from __future__ import annotations

from typing import Any

import torch

from deltatune.weights import merged_is_cheaper


class FusedVeraLinear(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        a: torch.Tensor,
        b: torch.Tensor,
        lambda_b: torch.Tensor,
        lambda_d: torch.Tensor,
    ) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        b_scaled = b * lambda_b.unsqueeze(1)  # Λ_b B: (out, r)
        merged = merged_is_cheaper(x2.shape[0], a.shape[1], b.shape[0], a.shape[0], torch.is_grad_enabled())
        if merged:
            weight = torch.addmm(weight, b_scaled, a * lambda_d.unsqueeze(1))  # W0 + Λ_b B Λ_d A
            p = None  # x A^T: recomputed in backward, where only the vector gradients need it
        else:
            p = x2 @ a.t()
        out = torch.addmm(bias, x2, weight.t()) if bias is not None else x2 @ weight.t()
        if p is not None:
            out.addmm_(p * lambda_d, b_scaled.t())
        ctx.save_for_backward(x2, weight, a, b, lambda_b, lambda_d, p)
        ctx.merged = merged
        ctx.in_shape = x.shape
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x2, weight, a, b, lambda_b, lambda_d, p = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_lb = grad_ld = None
        if ctx.needs_input_grad[0]:
            grad_x = g @ weight  # W0 + ΔW when merged
            if not ctx.merged:
                gp = (g @ (b * lambda_b.unsqueeze(1))).mul_(lambda_d)  # gradient at x A^T: (N, r)
                grad_x.addmm_(gp, a)
            grad_x = grad_x.view(ctx.in_shape)
        if ctx.needs_input_grad[5] or ctx.needs_input_grad[6]:
            gb = (g.t() @ (x2 @ a.t() if p is None else p)).mul_(b)  # (g^T x A^T) ∘ B: (out, r)
            if ctx.needs_input_grad[5]:
                grad_lb = gb @ lambda_d
            if ctx.needs_input_grad[6]:
                grad_ld = lambda_b @ gb
        return grad_x, None, None, None, None, grad_lb, grad_ld
