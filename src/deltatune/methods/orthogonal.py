"""Orthogonal parametrisations shared by OFT and BOFT.

A layer's rotation is a product of ``N`` block-diagonal orthogonal matrices, each conjugated by a
fixed permutation (the butterfly): ``M = B_{N-1} ... B_1 B_0`` with ``B_i = P_i diag(R_i1..R_iD) P_i^T``.
OFT is the case ``N = 1`` (``P_0 = I``). Each block ``R`` comes from a skew-symmetric ``S``:

- exact Cayley transform: ``R = (I - S)(I + S)^-1`` (orthogonal);
- its truncated Neumann series (OFT's cheaper option, no solve): with ``m`` powers,
  ``R ~ I + 2 (S + ... + S^(m-1)) + S^m``, which approximates ``(I + S)(I - S)^-1``, the
  transpose of the exact transform; this is the series the PEFT checkpoint format fixes.

Also here: the COFT projection of the generators (constrained OFT), multiplicative block dropout,
and running a convolution with rotated filters.

Vectors are rows: a rotation acts as ``x @ M`` (``transpose=True``: ``x @ M^T``). Every block of
every factor is processed in one batched op, never in a Python loop over blocks; permutations are
reshapes, not dense matrices, so a factor costs ``O(n * b)`` per row instead of ``O(n^2)``.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from deltatune.errors import DeltatuneError

_SKEW_INDEX: dict[tuple[int, torch.device], torch.Tensor] = {}


def packed_size(block_size: int) -> int:
    """Entries strictly above the diagonal of a ``block_size`` square matrix."""
    return block_size * (block_size - 1) // 2


def _skew_index(block_size: int, device: torch.device) -> torch.Tensor:
    """Position of each (i, j) entry of ``S`` in ``[0, upper..., -upper...]``: one gather builds ``S``."""
    key = (block_size, device)
    index = _SKEW_INDEX.get(key)
    if index is None:
        rows, cols = torch.triu_indices(block_size, block_size, 1)
        n = rows.numel()
        table = torch.zeros(block_size, block_size, dtype=torch.long)
        table[rows, cols] = torch.arange(1, n + 1)
        table[cols, rows] = torch.arange(n + 1, 2 * n + 1)
        index = _SKEW_INDEX[key] = table.flatten().to(device)
    return index


def _upper_index(block_size: int, device: torch.device) -> torch.Tensor:
    """Flat positions ``i * b + j`` of the entries above the diagonal, row-major (the packed order)."""
    key = (-block_size, device)
    index = _SKEW_INDEX.get(key)
    if index is None:
        rows, cols = torch.triu_indices(block_size, block_size, 1)
        index = _SKEW_INDEX[key] = (rows * block_size + cols).to(device)
    return index


def skew_from_packed(packed: torch.Tensor, block_size: int) -> torch.Tensor:
    """(..., b(b-1)/2) upper-triangle entries, row-major -> (..., b, b) skew-symmetric ``S``."""
    # The index tables are looked up here, outside the autograd node, so that torch.compile can
    # trace the node (it must not touch the module-level cache).
    index, upper = _skew_index(block_size, packed.device), _upper_index(block_size, packed.device)
    return cast(torch.Tensor, _PackedSkew.apply(packed, index, upper))


class _PackedSkew(torch.autograd.Function):
    """packed -> ``S``; backward: ``dp_k = dS_ij - dS_ji`` for the k-th entry (i < j), one gather."""

    @staticmethod
    def forward(ctx: Any, packed: torch.Tensor, index: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(upper)
        zero = packed.new_zeros((*packed.shape[:-1], 1))
        values = torch.cat([zero, packed, -packed], dim=-1)
        size = math.isqrt(index.shape[0])
        return values.index_select(-1, index).view(*packed.shape[:-1], size, size)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (upper,) = ctx.saved_tensors
        return (grad - grad.mT).flatten(-2).index_select(-1, upper), None, None


def skew_from_square(square: torch.Tensor) -> torch.Tensor:
    """The skew-symmetric part ``(A - A^T) / 2`` of a batch of square matrices (BOFT's storage)."""
    return 0.5 * (square - square.mT)


def cayley(skew: torch.Tensor) -> torch.Tensor:
    """Exact Cayley transform ``(I - S)(I + S)^-1`` of a batch of skew-symmetric matrices."""
    return cast(torch.Tensor, _Cayley.apply(skew))


class _Cayley(torch.autograd.Function):
    """``R = (I - S)(I + S)^-1 = 2A - I`` with ``A = (I + S)^-1``.

    Backward without a second solve: ``dR = 2 dA`` and ``dA = -A dM A`` give
    ``dL/dS = -2 A^T G A^T`` (``G = dL/dR``), two batched matmuls.
    """

    @staticmethod
    def forward(ctx: Any, skew: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(skew.shape[-1], dtype=skew.dtype, device=skew.device)
        inv = torch.linalg.inv(eye + skew)
        ctx.save_for_backward(inv)
        return 2 * inv - eye

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (inv,) = ctx.saved_tensors
        at = inv.mT
        return (at @ grad @ at).mul_(-2)


class _Neumann4(torch.autograd.Function):
    """The 4-power series (5 terms, the default) as ``R = P (P + 2S)`` with ``P = I + S^2``.

    ``(I + S^2)(I + 2S + S^2) = I + 2S + 2S^2 + 2S^3 + S^4``: two batched matmuls instead of
    three, and a hand-written backward of four (``Q = P + 2S``, ``G = dL/dR``):
    ``dQ = P^T G``, ``dP = G Q^T + dQ``, ``dS = 2 dQ + dP S^T + S^T dP``.
    """

    @staticmethod
    def forward(ctx: Any, skew: torch.Tensor) -> torch.Tensor:
        p = skew @ skew
        p.diagonal(dim1=-2, dim2=-1).add_(1)
        q = torch.add(p, skew, alpha=2)
        ctx.save_for_backward(skew, p, q)
        return p @ q

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        skew, p, q = ctx.saved_tensors
        dq = p.mT @ grad
        dp = torch.baddbmm(dq, grad, q.mT) if grad.dim() == 3 else grad @ q.mT + dq
        st = skew.mT
        return (dp @ st).add_(st @ dp).add_(dq, alpha=2)


def neumann_powers(terms: int) -> int:
    """The highest power of ``S`` in the series with ``terms`` terms (0 means ``R = I``).

    The checkpoint format fixes this: 1 term -> I, 2 -> I + 2S, and from 3 terms on
    ``m = max(terms - 1, 3)`` (3 and 4 terms give the same series).
    """
    if terms <= 1:
        return 0
    if terms == 2:
        return 1
    return max(terms - 1, 3)


def cayley_neumann(skew: torch.Tensor, terms: int) -> torch.Tensor:
    """``I + 2 (S + ... + S^(m-1)) + S^m`` (``m = neumann_powers(terms)``).

    The default ``m = 4`` factorises (:class:`_Neumann4`); other lengths use Horner's rule,
    ``R = I + S T``, ``T = 2I + S (2I + S (... (2I + S)))``, one batched matmul per power.
    """
    m = neumann_powers(terms)
    eye = torch.eye(skew.shape[-1], dtype=skew.dtype, device=skew.device)
    if m == 0:
        return eye.expand(skew.shape).clone()
    if m == 1:
        return eye + 2 * skew
    if m == 4:
        return cast(torch.Tensor, _Neumann4.apply(skew))
    flat = skew.reshape(-1, *skew.shape[-2:])
    two = (2 * eye).expand(flat.shape)
    acc = two + flat
    for _ in range(m - 2):
        acc = torch.baddbmm(two, flat, acc)
    return torch.baddbmm(eye.expand(flat.shape), flat, acc).view(skew.shape)


def inverse_blocks(blocks: torch.Tensor, orthogonal: bool) -> torch.Tensor:
    """Blocks ``Z`` with ``rotate(rotate(x, blocks, t), Z, not t) == x``: ``(R^-1)^T`` per block.

    For orthogonal blocks that is ``R`` itself (exact, no solve); the Neumann series is only
    nearly orthogonal, so its blocks are inverted — small, well-conditioned (near-orthogonal)
    matrices, batched.
    """
    if orthogonal:
        return blocks
    return torch.linalg.inv(blocks).mT


def coft_project(packed: torch.Tensor, eps: float) -> torch.Tensor:
    """Constrained OFT: keep each block's skew matrix within Frobenius norm ``eps / sqrt(blocks)``.

    ``||S||_F = sqrt(2) ||packed||``. Blocks already on the boundary (within 1e-5 relative) stay
    as they are, so projecting twice changes nothing (saved adapters reload bit for bit).
    """
    radius = eps / math.sqrt(packed.shape[0])
    norm = packed.norm(dim=-1, keepdim=True) * math.sqrt(2.0)
    inside = norm <= radius * (1 + 1e-5)
    return torch.where(inside, packed, packed * (radius / norm))


def drop_blocks(blocks: torch.Tensor, p: float) -> torch.Tensor:
    """Multiplicative dropout: ``int(p * D)`` random blocks of one random factor become ``I``.

    ``blocks``: (N, D, b, b). Used only while training.
    """
    factors, count, size = blocks.shape[0], blocks.shape[1], blocks.shape[-1]
    dropped = int(p * count)
    if dropped == 0:
        return blocks
    mask = torch.zeros(factors, count, dtype=torch.bool, device=blocks.device)
    factor = int(torch.randint(factors, (1,)).item())
    mask[factor, torch.randperm(count, device=blocks.device)[:dropped]] = True
    eye = torch.eye(size, dtype=blocks.dtype, device=blocks.device)
    return torch.where(mask[..., None, None], eye, blocks)


def rotate_blocks(x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """``x @ diag(R_1, ..., R_D)`` on the last axis; one shared block (D = 1) repeats along it."""
    count, size = blocks.shape[0], blocks.shape[-1]
    if count == 1:
        return (x.reshape(-1, size) @ blocks[0]).view(x.shape)
    rows = x.reshape(-1, x.shape[-1])
    return cast(torch.Tensor, _BlockDiagonalMatmul.apply(rows, blocks)).view(x.shape)


def _block_matmul(rows: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """(rows, D*b) @ diag(blocks) as one batched matmul over the D blocks.

    The operands and the result are strided views of (rows, D, b) tensors, so nothing is
    transposed into a copy: the output is written in the layout the next layer reads.
    """
    count, size = blocks.shape[0], blocks.shape[-1]
    rows = rows.contiguous()
    n = rows.shape[0]
    if torch.compiler.is_compiling():  # a strided out= cannot be traced; the compiler plans the layout itself
        return torch.bmm(rows.view(n, count, size).transpose(0, 1), blocks).transpose(0, 1).reshape(n, -1)
    out = torch.empty_like(rows)
    torch.bmm(rows.view(n, count, size).transpose(0, 1), blocks, out=out.view(n, count, size).transpose(0, 1))
    return out


class _BlockDiagonalMatmul(torch.autograd.Function):
    """``x @ diag(blocks)`` with a backward that, like the forward, copies no activations."""

    @staticmethod
    def forward(ctx: Any, rows: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows, blocks)
        return _block_matmul(rows, blocks)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        rows, blocks = ctx.saved_tensors
        grad = grad.contiguous()
        grad_rows = _block_matmul(grad, blocks.mT) if ctx.needs_input_grad[0] else None
        grad_blocks = None
        if ctx.needs_input_grad[1]:
            n, (count, size) = rows.shape[0], blocks.shape[:2]
            x = rows.contiguous().view(n, count, size).transpose(0, 1)  # (D, n, b)
            grad_blocks = torch.bmm(x.mT, grad.view(n, count, size).transpose(0, 1))
        return grad_rows, grad_blocks


def _butterfly(x: torch.Tensor, level: int, half: int, inverse: bool) -> torch.Tensor:
    """``x @ P`` (``inverse``) or ``x @ P^T`` for the level-``level`` butterfly permutation.

    Within groups of ``2^(level+1)`` chunks of ``half`` features, ``P^T`` puts the even chunks
    first, then the odd ones.
    """
    n = x.shape[-1]
    groups, chunks = n // (half << (level + 1)), 1 << level
    inner = (2, chunks) if inverse else (chunks, 2)
    return x.reshape(-1, groups, *inner, half).transpose(2, 3).reshape(x.shape)


def rotate(x: torch.Tensor, blocks: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """``x @ M`` (or ``x @ M^T``) for the butterfly rotation ``M`` built from ``blocks`` (N, D, b, b).

    ``M = B_{N-1} ... B_0``; ``x @ M`` applies ``B_{N-1}`` first. ``transpose`` applies
    ``B_0^T`` first. Level 0 has no permutation.
    """
    factors, half = blocks.shape[0], blocks.shape[-1] // 2
    order = range(factors) if transpose else reversed(range(factors))
    for level in order:
        block = blocks[level].mT if transpose else blocks[level]
        if level:
            x = _butterfly(x, level, half, inverse=True)
        x = rotate_blocks(x, block)
        if level:
            x = _butterfly(x, level, half, inverse=False)
    return x


def dense(blocks: torch.Tensor, features: int) -> torch.Tensor:
    """The rotation as a dense (features, features) matrix ``M`` (for checks and merging)."""
    eye = torch.eye(features, dtype=blocks.dtype, device=blocks.device)
    return rotate(eye, blocks)


def conv_with_weight(base: nn.Module, x: torch.Tensor, weight: torch.Tensor, inner: object, what: str) -> torch.Tensor:
    """The base convolution run with ``weight`` (in the base's dtype) instead of its own.

    ``_conv_forward`` honours every setting of the base (stride, padding and padding mode,
    dilation). The rotated filters are a function of the base filters only, so this cannot run on
    top of another unmerged adapter of the same layer (``inner`` would have to be the base).
    """
    if inner is not base:
        raise DeltatuneError(
            f"{what} on a convolution rotates the base filters, so it cannot run on top of another active, "
            "unmerged adapter of the same layer. Activate one adapter at a time, or merge the other one first "
            "(model.merge_adapter([name]))."
        )
    return base._conv_forward(x, weight, base.bias)  # type: ignore[operator]


def divisors(n: int) -> list[int]:
    """The positive divisors of ``n``, ascending (for error messages listing valid block sizes)."""
    return [d for d in range(1, n + 1) if n % d == 0]
