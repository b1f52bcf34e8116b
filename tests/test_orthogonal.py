"""The orthogonal parametrisations (methods/orthogonal.py) against plain reference math.

The Cayley transform, the Neumann series and the packed skew matrix have hand-written backward
passes; here their values and gradients are checked against the textbook formulas run through
ordinary autograd (a solve, an explicit power sum, an index gather), and with gradcheck.
"""

from __future__ import annotations

import pytest
import torch

from deltatune.methods import orthogonal as orth


def _reference_skew(packed: torch.Tensor, b: int) -> torch.Tensor:
    rows, cols = torch.triu_indices(b, b, 1)
    s = packed.new_zeros((*packed.shape[:-1], b, b))
    s[..., rows, cols] = packed
    return s - s.mT


def _reference_cayley(s: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(s.shape[-1], dtype=s.dtype)
    return (eye - s) @ torch.linalg.inv(eye + s)


def _reference_neumann(s: torch.Tensor, powers: int) -> torch.Tensor:
    """``I + 2 (S + ... + S^(m-1)) + S^m`` written out term by term (one power: ``I + 2S``)."""
    eye = torch.eye(s.shape[-1], dtype=s.dtype).expand(s.shape)
    out, power = eye.clone(), eye
    for k in range(1, powers + 1):
        power = power @ s
        out = out + (power if k == powers > 1 else 2 * power)
    return out


def _packed(blocks: int, b: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.3 * torch.randn(blocks, orth.packed_size(b), generator=g, dtype=torch.float64)).requires_grad_(True)


@pytest.mark.parametrize("b", [2, 5, 8])
def test_packed_skew_value_and_gradient(b: int) -> None:
    packed = _packed(3, b)
    weights = torch.randn(3, b, b, dtype=torch.float64)
    ours = orth.skew_from_packed(packed, b)
    ref = _reference_skew(packed, b)
    torch.testing.assert_close(ours, ref, atol=0, rtol=0)
    (g_ours,) = torch.autograd.grad((ours * weights).sum(), packed)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), packed)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(lambda p: orth.skew_from_packed(p, b), (packed,))


@pytest.mark.parametrize("terms", [2, 3, 4, 5, 6, 8])
def test_neumann_value_and_gradient(terms: int) -> None:
    b = 6
    packed = _packed(4, b, seed=terms)
    weights = torch.randn(4, b, b, dtype=torch.float64)
    ours = orth.cayley_neumann(orth.skew_from_packed(packed, b), terms)
    ref = _reference_neumann(_reference_skew(packed, b), orth.neumann_powers(terms))
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
    (g_ours,) = torch.autograd.grad((ours * weights).sum(), packed)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), packed)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-10, rtol=0)
    assert torch.autograd.gradcheck(lambda p: orth.cayley_neumann(orth.skew_from_packed(p, b), terms), (packed,))


def test_cayley_value_gradient_and_orthogonality() -> None:
    b = 7
    packed = _packed(5, b, seed=3)
    weights = torch.randn(5, b, b, dtype=torch.float64)
    ours = orth.cayley(orth.skew_from_packed(packed, b))
    ref = _reference_cayley(_reference_skew(packed, b))
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
    eye = torch.eye(b, dtype=torch.float64).expand(ours.shape)
    torch.testing.assert_close(ours @ ours.mT, eye, atol=1e-12, rtol=0)
    (g_ours,) = torch.autograd.grad((ours * weights).sum(), packed)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), packed)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-10, rtol=0)
    assert torch.autograd.gradcheck(lambda p: orth.cayley(orth.skew_from_packed(p, b)), (packed,))


def test_cayley_and_neumann_on_butterfly_shaped_batches() -> None:
    """BOFT passes (factors, blocks, b, b) skew matrices made from full squares."""
    g = torch.Generator().manual_seed(7)
    raw = (0.2 * torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)).requires_grad_(True)
    for fn, ref_fn in (
        (orth.cayley, _reference_cayley),
        (lambda s: orth.cayley_neumann(s, 5), lambda s: _reference_neumann(s, 4)),
    ):
        ours = fn(orth.skew_from_square(raw))
        ref = ref_fn(orth.skew_from_square(raw))
        torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
        assert torch.autograd.gradcheck(lambda r, f=fn: f(orth.skew_from_square(r)), (raw,))


def test_float32_matches_float64_reference() -> None:
    """The forms the hand-written passes use stay accurate in float32 (what training runs)."""
    b = 32
    packed64 = _packed(16, b, seed=11).detach() * 0.3
    packed32 = packed64.float().requires_grad_(True)
    weights = torch.randn(16, b, b, dtype=torch.float64)
    for terms in (None, 5):
        fn = orth.cayley if terms is None else (lambda s, t=terms: orth.cayley_neumann(s, t))
        ours = fn(orth.skew_from_packed(packed32, b))
        ref = (
            _reference_cayley(_reference_skew(packed64, b))
            if terms is None
            else _reference_neumann(_reference_skew(packed64, b), 4)
        )
        torch.testing.assert_close(ours.double(), ref, atol=2e-5, rtol=0)
        (g,) = torch.autograd.grad((ours * weights.float()).sum(), packed32)
        p = packed64.clone().requires_grad_(True)
        ref_p = (
            _reference_cayley(_reference_skew(p, b)) if terms is None else _reference_neumann(_reference_skew(p, b), 4)
        )
        (g_ref,) = torch.autograd.grad((ref_p * weights).sum(), p)
        torch.testing.assert_close(g.double(), g_ref, atol=1e-3, rtol=1e-4)
