"""Mixed-adapter batches for LoRA: every sample of a batch gets its own adapter, in one op.

The factors of the adapters used by the batch are stacked (zero-padded to the largest rank, the
scale folded into B, zeros for samples without an adapter) and gathered per sample, so the whole
batch costs one batched matmul pair — not one pass per adapter. Without autograd (inference) the
stacks are reused while every factor is the same tensor, unchanged: the cache key holds each
factor's storage address and version counter, which an optimizer step, ``load_state_dict``, a
device move or resharding all change, so a stale stack is never used. With autograd they are
rebuilt every call from the live parameters, and under torch.compile too (the cache key would
make the compiler guard on storage addresses and recompile).

DoRA adapters join too: their rule scales each output feature by ``f = m / ||W0 + s B A||``, one
vector per adapter, so the batch gathers one row of f per sample (ones for plain LoRA and for
samples without an adapter) and applies the same formula as a single DoRA adapter (dora.py).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from deltatune import weights
from deltatune.methods.lora import dora

_CONV_FN = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}


def _stacked(
    adapters: Sequence[Any], a_name: str, b_name: str, rank_first: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_stack`, reused across calls when nothing it reads has changed (see the module docstring).

    ``rank_first``: B as a contiguous (n, r_max, out), the layout the batched matmuls read fastest.
    """
    if torch.is_grad_enabled() or torch.compiler.is_compiling():  # compiled: the graph stacks (no cache guards)
        return _stack(adapters, a_name, b_name, rank_first)
    factors = [(_param(a, a_name), _param(a, b_name)) if a is not None else None for a in adapters]
    state = [rank_first] + [
        None if f is None else (a.scaling, *((w.data_ptr(), w._version, w.shape, w.dtype) for w in f))
        for a, f in zip(adapters, factors, strict=True)
    ]
    holder = next(a for a in adapters if a is not None)
    cached = holder.__dict__.get("_mixed_stack")
    if cached is not None and cached[0] == state and _same_tensors(cached[1], factors):
        return cached[2], cached[3]
    a_all, b_all = _stack(adapters, a_name, b_name, rank_first)
    refs = [None if f is None else tuple(weakref.ref(w) for w in f) for f in factors]
    holder.__dict__["_mixed_stack"] = (state, refs, a_all, b_all)
    return a_all, b_all


def _same_tensors(refs: list[Any], factors: list[Any]) -> bool:
    """The cached weak references still point at these very tensors (a freed one never matches)."""
    for r, f in zip(refs, factors, strict=True):
        if (r is None) != (f is None):
            return False
        if r is not None and any(x() is not w for x, w in zip(r, f, strict=True)):
            return False
    return True


def _stack(
    adapters: Sequence[Any], a_name: str, b_name: str, rank_first: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """A: (n, r_max, *in), B*scale: (n, out, r_max) (``rank_first``: (n, r_max, out)); zeros where a sample
    has no adapter."""
    present = [a for a in adapters if a is not None]
    r_max = max(a.r for a in present)
    a0 = _factor(present[0], a_name)
    b0 = _factor(present[0], b_name)
    a_list, b_list = [], []
    for adapter in adapters:
        if adapter is None:
            a_list.append(a0.new_zeros((r_max, *a0.shape[1:])))
            b_list.append(b0.new_zeros((b0.shape[0], r_max)))
            continue
        a = _factor(adapter, a_name)
        b = _factor(adapter, b_name) * adapter.scaling
        pad = r_max - adapter.r
        if pad:
            a = torch.cat([a, a.new_zeros((pad, *a.shape[1:]))])
            b = torch.cat([b, b.new_zeros((b.shape[0], pad))], dim=1)
        a_list.append(a)
        b_list.append(b)
    b_all = torch.stack(b_list)
    return torch.stack(a_list), b_all.transpose(1, 2).contiguous() if rank_first else b_all


def _param(adapter: Any, name: str) -> torch.Tensor:
    """The factor parameter itself: the adapter's own parameter ``name`` or the weight of its submodule.

    Read from the module dicts directly: this runs for every adapter of every layer on every
    mixed-batch call, where ``nn.Module.__getattr__`` alone would cost more than the cache check.
    """
    param = adapter._parameters.get(name)
    return param if param is not None else adapter._modules[name]._parameters["weight"]


def _factor(adapter: Any, name: str) -> torch.Tensor:
    """A LoRA factor as (r, ...) for A or (out, r) for B, whatever module holds it."""
    weight = _param(adapter, name)
    return weight.flatten(1) if name == "lora_B" else weight  # conv B is (out, r, 1, ..., 1)


def _dropout(adapters: Sequence[Any], index: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Per-sample dropout with each sample's own adapter's rate (identity in eval mode); was it applied?"""
    first = next(a for a in adapters if a is not None)
    rates = [a.dropout_p if a is not None else 0.0 for a in adapters]
    if not first.training or not any(rates):
        return x, False
    p = torch.tensor(rates, dtype=x.dtype, device=x.device)[index]
    p = p.view(-1, *([1] * (x.dim() - 1)))
    keep = (torch.rand_like(x) >= p).to(x.dtype)
    return x * keep / (1 - p), True


def _with_dora(
    out: torch.Tensor, delta: torch.Tensor, f: torch.Tensor, bias: torch.Tensor | None, w0x: torch.Tensor | None
) -> torch.Tensor:
    """Each sample's DoRA rule (dora.py) with its own f (ones for plain LoRA rows, which keep out + delta)."""
    o = out.to(f.dtype)
    if w0x is not None:  # dropout: the dropped input also went through W0
        return (o + f * (w0x + delta) - w0x).to(out.dtype)
    z = o + delta
    if bias is None:
        return (z * f).to(out.dtype)
    return torch.addcmul((1 - f) * bias.to(f.dtype), z, f).to(out.dtype)


def _bias(base: Any, shape: tuple[int, ...]) -> torch.Tensor | None:
    bias = getattr(base, "bias", None)
    return bias.view(shape) if isinstance(bias, torch.Tensor) else None


def mixed_linear(
    adapters: Sequence[Any], index: torch.Tensor, x: torch.Tensor, out: torch.Tensor, base: Any = None
) -> torch.Tensor:
    a_all, b_all = _stacked(adapters, "lora_A", "lora_B", rank_first=True)  # (n, r, in), (n, r, out)
    rows = x.shape[0]
    xs, dropped = _dropout(adapters, index, x.to(a_all.dtype))
    xs = xs.reshape(rows, -1, x.shape[-1])
    # index_select, not a[index]: several times faster for this gather on the CPU.
    b_rows = b_all.index_select(0, index)  # (rows, r_max, out)
    h = torch.bmm(xs, a_all.index_select(0, index).transpose(1, 2))  # (rows, L, r_max)
    f = dora.factors_for_batch(adapters, base)
    if f is None and out.dtype == h.dtype and weights.output_is_free(base, out):
        # Accumulate into the base output: no full-size temporary per layer.
        out.view(rows, -1, out.shape[-1]).baddbmm_(h, b_rows)
        return out
    delta = torch.bmm(h, b_rows).view(out.shape)  # (rows, ..., out)
    if f is None:
        return out + delta.to(out.dtype)
    first = next(a for a in adapters if a is not None)
    w0x = first.base_apply(base, xs).view(out.shape) if dropped else None
    f_rows = f[index].view(rows, *([1] * (out.dim() - 2)), -1)
    return _with_dora(out, delta, f_rows, _bias(base, (-1,)), w0x)


def mixed_embedding(
    adapters: Sequence[Any], index: torch.Tensor, ids: torch.Tensor, out: torch.Tensor, base: Any = None
) -> torch.Tensor:
    a_all, b_all = _stacked(adapters, "lora_embedding_A", "lora_embedding_B", rank_first=True)  # (n, r, V), (n, r, D)
    n, r_max, vocab = a_all.shape
    table = a_all.transpose(1, 2).reshape(n * vocab, r_max)
    rows = ids.shape[0]
    flat_ids = ids.reshape(rows, -1) + (index * vocab).view(rows, 1)
    h = F.embedding(flat_ids, table)  # (rows, L, r_max)
    delta = torch.bmm(h, b_all.index_select(0, index)).view(out.shape)
    f = dora.factors_for_batch(adapters, base)
    if f is None:
        return out + delta.to(out.dtype)
    return _with_dora(out, delta, f[index].view(rows, *([1] * (out.dim() - 2)), -1), None, None)


def mixed_conv(
    adapters: Sequence[Any], index: torch.Tensor, x: torch.Tensor, out: torch.Tensor, base: Any = None
) -> torch.Tensor:
    first = next(a for a in adapters if a is not None)
    a_all, b_all = _stacked(adapters, "lora_A", "lora_B")  # (n, r, in, *k), (n, out, r)
    rows, r_max = x.shape[0], a_all.shape[1]
    xs, dropped = _dropout(adapters, index, x.to(a_all.dtype))
    # A grouped convolution with one group per sample applies each sample's own A.
    weight = a_all.index_select(0, index).reshape(rows * r_max, *a_all.shape[2:])
    conv = _CONV_FN[x.dim()]
    h = conv(
        xs.reshape(1, rows * x.shape[1], *x.shape[2:]),
        weight,
        stride=first.lora_A.stride,
        padding=first.lora_A.padding,
        groups=rows,
    )
    h = h.view(rows, r_max, -1)
    delta = torch.bmm(b_all.index_select(0, index), h).view(out.shape)  # (rows, out, *spatial)
    f = dora.factors_for_batch(adapters, base)
    if f is None:
        return out + delta.to(out.dtype)
    spatial = (1,) * (out.dim() - 2)
    w0x = first.base_apply(base, xs) if dropped else None
    return _with_dora(out, delta, f[index].view(rows, -1, *spatial), _bias(base, (-1, *spatial)), w0x)
