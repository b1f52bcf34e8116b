"""DoRA as an option of a LoRA adapter: a learned magnitude on top of the LoRA direction.

Liu et al., "DoRA: Weight-Decomposed Low-Rank Adaptation" (2024).

Update rule, per output feature (row ``o`` of the weight, see ``LoraAdapter.weight_rows``)::

    W'_o = m_o * (W0 + s B A)_o / ||(W0 + s B A)_o||

The norm is over ``in`` for a dense layer (W0: (out, in)), over ``(in, *kernel)`` for a
convolution and over the vocabulary for an embedding (one norm per embedding dimension); as in
section 4.3 of the paper it is a constant for backprop (detached). ``m`` is the trainable
``lora_magnitude_vector``, shaped (out,) for dense layers, (dim,) for embeddings and
(1, out, 1, ...) for convolutions (PEFT's layouts), and starts as the norm itself, so a DoRA
adapter starts as the LoRA adapter it extends.

The forward never builds W'. With ``f = m / ||W0 + s B A||`` it reuses the base layer's output::

    h = f * (base(x) - bias + s B A x) + bias          (no dropout)
    h = base(x) + f * (W0 x' + s B A x') - W0 x'       (training with dropout, x' = dropout(x))

On a plain frozen nn.Linear in training without dropout, the first rule runs as one autograd
node with a hand-written backward (:class:`FusedDoraLinear`).

and takes the norm from ``||w + s a||^2 = ||w||^2 + s b . (2 w A^T + s (A A^T) b)`` for a row
``w`` of W0 and the row ``b`` of B, which costs W0 A^T (out x r) instead of the out x in matrix
W0 + s B A. ``||w||^2`` is cached while W0 is unchanged; in eval mode the whole norm is cached.
Every cache is keyed on the data pointer and version counter of the tensors it came from, so an
optimizer step, a load or a merge invalidates it; ``train()`` clears it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from deltatune import weights
from deltatune.errors import DeltatuneError, MergeError

if TYPE_CHECKING:
    from deltatune.methods.lora.adapter import LoraAdapter


class DoraState:
    """The non-parameter state of one DoRA adapter: caches, and the norm used by a merge."""

    def __init__(self) -> None:
        self.base_sq: tuple[tuple[Any, ...], torch.Tensor] | None = None  # ||w||^2 per row of W0
        self.norm: tuple[tuple[Any, ...], torch.Tensor] | None = None  # eval only
        self.merged_norm: torch.Tensor | None = None  # the norm a merge divided by, for unmerge

    def clear(self) -> None:
        self.base_sq = None
        self.norm = None


def tensor_key(t: torch.Tensor) -> tuple[Any, ...] | None:
    """What identifies a tensor's current values cheaply; None where there is no version counter."""
    try:
        return (t.data_ptr(), t._version, tuple(t.shape), t.stride(), t.dtype, t.device)
    except RuntimeError:  # inference-mode tensors track no version
        return None


def attach(adapter: LoraAdapter, base: nn.Module) -> None:
    """Turn DoRA on: ``lora_magnitude_vector`` = ||W0 + s B A|| per feature (exact, no cache)."""
    with torch.no_grad():
        combined = weights.read_weight(base).to(adapter.factors()[0].dtype) + adapter.delta_weight()
        norm = torch.linalg.vector_norm(adapter.weight_rows(combined), dim=1)
    adapter.lora_magnitude_vector = nn.Parameter(norm.reshape(adapter.magnitude_shape(norm.shape[0])))
    adapter.dora = DoraState()


def weight_norm(adapter: LoraAdapter, base: nn.Module) -> torch.Tensor:
    """||W0 + s B A|| per output feature, detached: shape (features,)."""
    state = adapter.dora
    assert state is not None
    a_param, b_param = adapter.factors()
    w = weights.read_weight(base)
    key: tuple[Any, ...] | None = None
    if not adapter.training and not torch.compiler.is_compiling():  # compiled graphs recompute, never guard on it
        # A norm made under inference_mode cannot be saved for backward outside it: keyed on the mode too.
        key = (
            tensor_key(w),
            tensor_key(a_param),
            tensor_key(b_param),
            adapter.scaling,
            torch.is_inference_mode_enabled(),
        )
        if None in key:
            key = None
        elif state.norm is not None and state.norm[0] == key:
            return state.norm[1]
    with torch.no_grad():
        a = a_param.flatten(1)  # (r, fan_in)
        b = b_param.flatten(1)  # (features, r)
        rows = adapter.weight_rows(w).to(a.dtype)  # (features, fan_in): a copy only for low-precision bases
        s = adapter.scaling
        cross = torch.nn.functional.linear(rows, a)  # W0 A^T: (features, r)
        # 2 W0 A^T + s B (A A^T), then its dot with each row of B; few ops, as small layers feel each one
        inner = torch.addmm(cross, b, a @ a.t(), beta=2.0, alpha=s)
        n2 = torch.add(_base_sq(state, w, rows), torch.linalg.vecdot(inner, b), alpha=s)
        norm = n2.clamp_min_(0).sqrt_()
    if key is not None:
        state.norm = (key, norm)
    return norm


def _base_sq(state: DoraState, w: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    key = None if torch.compiler.is_compiling() else tensor_key(w)
    if key is not None and state.base_sq is not None and state.base_sq[0] == key:
        return state.base_sq[1]
    sq = rows.pow(2).sum(1)
    if key is not None:
        state.base_sq = (key, sq)
    return sq


def scale(adapter: LoraAdapter, base: nn.Module) -> torch.Tensor:
    """f = m / ||W0 + s B A||, shaped like the magnitude (gradient flows to m only)."""
    m = adapter.lora_magnitude_vector
    return m / weight_norm(adapter, base).view(m.shape)


class FusedDoraLinear(torch.autograd.Function):
    """One autograd node for DoRA on a plain frozen ``nn.Linear`` (no dropout):

        z = x W0^T + s (x A^T) B^T,    y = (m / n) * z + bias

    with ``n`` = ||W0 + s B A|| per output row, a constant (detached). The generic path runs
    the base, A, an ``addmm`` that copies the base output, a ``mul`` and, in backward, adds the
    base and adapter input-gradients in a separate full-size pass; here ``z`` is accumulated in
    place into the base product, and the input gradient is one ``addmm_`` into ``(f g) W0``.
    Shapes: x (..., in), W0 (out, in), A (r, in), B (out, r), m and n (out,).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        a: torch.Tensor,
        b: torch.Tensor,
        m: torch.Tensor,
        norm: torch.Tensor,
        scaling: float,
    ) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        z = x2 @ weight.t()
        h = x2 @ a.t()
        z.addmm_(h, b.t(), alpha=scaling)
        f = m / norm
        y = torch.addcmul(bias, z, f) if bias is not None else z * f
        ctx.save_for_backward(x2, h, z, weight, a, b, f, norm)
        ctx.scaling = scaling
        ctx.in_shape = x.shape
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x2, h, z, weight, a, b, f, norm = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_a = grad_b = grad_m = None
        if ctx.needs_input_grad[5]:
            grad_m = (g * z).sum(0).div_(norm)  # dy/dm = z / n (faster on CPU than a vecdot over dim 0)
        col = f.unsqueeze(1)
        # The gradient at z is g f. Where the layer has fewer inputs than the batch has tokens, f goes
        # on W0 (out, in) and B (out, r) instead of on g (N, out): the same products, less to scale.
        on_weights = weight.shape[1] < g.shape[0]
        gf = g if on_weights else g * f
        gh = (gf @ (b * col if on_weights else b)).mul_(ctx.scaling)  # gradient at h = x A^T, (N, r)
        if ctx.needs_input_grad[0]:
            grad_x = (gf @ (weight * col if on_weights else weight)).addmm_(gh, a).view(ctx.in_shape)
        if ctx.needs_input_grad[3]:
            grad_a = gh.t() @ x2
        if ctx.needs_input_grad[4]:
            grad_b = (gf.t() @ h).mul_(col * ctx.scaling if on_weights else ctx.scaling)
        return grad_x, None, None, grad_a, grad_b, grad_m, None, None


def _fusable(adapter: LoraAdapter, x: torch.Tensor, inner: Callable[..., Any], base: nn.Module) -> bool:
    """The fused node computes exactly what the generic path would: the base itself runs below
    (no adapters stacked under this one), a plain frozen Linear without hooks (weights.fusable_linear),
    no active dropout, and gradients wanted (inference uses the generic in-place path)."""
    if inner is not base or not torch.is_grad_enabled():
        return False
    if adapter.training and not isinstance(adapter.lora_dropout, nn.Identity):
        return False
    a = adapter.factors()[0]
    return a.dim() == 2 and adapter.lora_magnitude_vector.dim() == 1 and weights.fusable_linear(base, x, a)


def forward(
    adapter: LoraAdapter, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor], base: nn.Module
) -> torch.Tensor:
    if _fusable(adapter, x, inner, base):
        a, b = adapter.factors()
        norm = weight_norm(adapter, base)
        bias = getattr(base, "bias", None)
        m = adapter.lora_magnitude_vector
        return FusedDoraLinear.apply(x, base.weight, bias, a, b, m, norm, adapter.scaling)
    out = inner(x)
    f = scale(adapter, base)
    dtype = f.dtype
    if adapter.training and not isinstance(adapter.lora_dropout, nn.Identity):
        # The dropped input also goes through W0 here, so that m scales what B A sees (PEFT's rule).
        h = adapter.lora_input(x)
        w0x = adapter.base_apply(base, h)
        return (out.to(dtype) + f * adapter.lora_delta(h, w0x) - w0x).to(out.dtype)
    z = adapter.lora_delta(adapter.lora_input(x), out.to(dtype))  # base(x) + s B A x: a new tensor
    bias = getattr(base, "bias", None)
    shift = (1 - f) * bias.to(dtype).view(f.shape) if isinstance(bias, torch.Tensor) else None
    if torch.is_grad_enabled() and (z.requires_grad or f.requires_grad):
        # f * (z - bias) + bias in one pass: addcmul((1 - f) * bias, z, f)
        y = z * f if shift is None else torch.addcmul(shift, z, f)
    else:  # inference: the same ops written into z, so no new output tensor (and the same bits)
        y = z.mul_(f) if shift is None else torch.addcmul(shift, z, f, out=z)
    return y.to(out.dtype)


def merge_into(adapter: LoraAdapter, weight: torch.Tensor) -> torch.Tensor:
    """``f * (W + s B A)`` with the norm of the weight it is merged into; remembered for unmerge."""
    state = adapter.dora
    assert state is not None
    combined = weight + adapter.delta_weight().to(weight.dtype)
    norm = torch.linalg.vector_norm(adapter.weight_rows(combined), dim=1)
    m = adapter.lora_magnitude_vector.detach().to(weight.dtype).reshape(-1)
    if bool((m == 0).any()):
        raise MergeError(
            "A DoRA magnitude has zero entries, so merging could not be undone; nothing was merged. "
            "Use merge_and_unload() on a copy, or keep the adapter unmerged."
        )
    state.merged_norm = norm
    return combined * adapter.feature_view(m / norm, weight.dim())


def unmerge_from(adapter: LoraAdapter, weight: torch.Tensor) -> torch.Tensor:
    state = adapter.dora
    assert state is not None
    if state.merged_norm is None:
        raise MergeError("This DoRA adapter was not merged by this model, so its merge cannot be undone.")
    m = adapter.lora_magnitude_vector.detach().to(weight.dtype).reshape(-1)
    f = adapter.feature_view(m / state.merged_norm.to(weight.dtype), weight.dim())
    state.merged_norm = None
    return weight / f - adapter.delta_weight().to(weight.dtype)


def factors_for_batch(adapters: Sequence[Any], base: nn.Module | None) -> torch.Tensor | None:
    """Per-adapter f as rows of (len(adapters), features): ones for plain LoRA or no adapter.

    None when no adapter of the batch uses DoRA (the plain LoRA path then stays as it was).
    """
    if not any(a is not None and a.dora is not None for a in adapters):
        return None
    if base is None:
        raise DeltatuneError("DoRA in a mixed batch needs the base layer; this AdaptedLayer did not pass it.")
    scales = {i: scale(a, base).reshape(-1) for i, a in enumerate(adapters) if a is not None and a.dora is not None}
    ones = torch.ones_like(next(iter(scales.values())))
    return torch.stack([scales.get(i, ones) for i in range(len(adapters))])
