"""FourierFT adapters for dense layers (nn.Linear and GPT-2 Conv1D).

Gao et al., "Parameter-Efficient Fine-Tuning with Discrete Fourier Transform" (ICML 2024).

Update rule: ``h = W0 x + ΔW x`` with ``ΔW = scaling * Re(IFFT2(F))``, where ``F: (out, in)`` is
zero except at ``n`` fixed locations that hold the trained ``fourierft_spectrum: (n,)``. The
locations are the first ``n`` entries of ``randperm(out * in)`` drawn from a CPU generator seeded
with ``random_loc_seed``, read row-major (``row = k // in``, ``col = k % in``) — PEFT's recipe,
so they are not stored in checkpoints.

For a real ``F``, ``Re(IFFT2(F)) = IFFT2((F + F[-p, -q]) / 2)`` and that spectrum is Hermitian,
so ΔW is computed with the half-size real transform ``irfft2`` on the scattered half spectrum.
ΔW is dense, so on a plain dense base (and nothing stacked below) the forward is one GEMM with
``W0 + ΔW`` instead of two.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module

from deltatune import weights
from deltatune.config import AdapterConfig
from deltatune.errors import ConfigError, UnsupportedLayerError
from deltatune.layer import Adapter
from deltatune.methods.fourierft.config import FourierFTConfig


def spectral_locations(out_features: int, in_features: int, n: int, seed: int) -> torch.Tensor:
    """(2, n) long: the rows and columns of the trained coefficients in the (out, in) spectrum."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    flat = torch.randperm(out_features * in_features, generator=generator, device="cpu")[:n]
    return torch.stack([flat // in_features, flat % in_features])


def _half_spectrum_scatter(locations: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    """(2, m): for each entry of the Hermitian half spectrum that a coefficient feeds, (flat position, coefficient).

    Coefficient k at (r, c) feeds (r, c) and its mirror (-r mod out, -c mod in), each with weight 1/2,
    where the column lies in the stored half ``[0, in // 2]``.
    """
    half = in_features // 2 + 1
    rows, cols = locations
    index = torch.arange(rows.numel(), device=rows.device)
    mirror_rows, mirror_cols = (-rows) % out_features, (-cols) % in_features
    direct, mirrored = cols < half, mirror_cols < half
    position = torch.cat([rows[direct] * half + cols[direct], mirror_rows[mirrored] * half + mirror_cols[mirrored]])
    return torch.stack([position, torch.cat([index[direct], index[mirrored]])])


class FourierFTLinear(Adapter):
    """FourierFT on a dense layer: ``h = W0 x + scaling * Re(IFFT2(F)) x``, ``F (out, in)`` sparse.

    Trained: ``fourierft_spectrum (n,)``. ``_scatter`` (a non-persistent buffer derived from the
    seed) says where each coefficient lands in the half spectrum.
    """

    _scatter: torch.Tensor
    needs_base = True  # to fold ΔW into a plain dense base's GEMM
    additive = True  # W0 x + ΔW x: commutes with other additive adapters when merging

    def __init__(self, in_features: int, out_features: int, n: int, scaling: float, seed: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.n_frequency = n
        self.scaling = scaling
        self.seed = seed
        self.fourierft_spectrum = nn.Parameter(torch.randn(n))
        self.register_buffer("_scatter", self._derive_scatter().to(self.fourierft_spectrum.device), persistent=False)

    def _derive_scatter(self) -> torch.Tensor:
        locations = spectral_locations(self.out_features, self.in_features, self.n_frequency, self.seed)
        return _half_spectrum_scatter(locations, self.out_features, self.in_features)

    def _apply(self, fn: Any, recurse: bool = True) -> FourierFTLinear:
        was_meta = self._scatter.is_meta
        super()._apply(fn, recurse)
        if was_meta and not self._scatter.is_meta:  # materialised (to_empty): derive the locations again
            self._scatter = self._derive_scatter().to(self._scatter.device)
        return self

    def reset(self, init: bool) -> None:
        if init:
            with torch.no_grad():
                self.fourierft_spectrum.zero_()

    def delta_weight(self) -> torch.Tensor:
        spectrum = self.fourierft_spectrum
        half = self.in_features // 2 + 1
        # irfft2 needs fp32 or fp64 (no half precision)
        values = spectrum.to(torch.promote_types(spectrum.dtype, torch.float32))[self._scatter[1]]
        values = values * (0.5 * self.scaling)
        dense = values.new_zeros(self.out_features * half).index_add(0, self._scatter[0], values)
        delta = torch.fft.irfft2(dense.view(self.out_features, half), s=(self.out_features, self.in_features))
        return delta.to(spectrum.dtype)

    def forward(
        self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor], base: nn.Module | None = None
    ) -> torch.Tensor:
        delta = self.delta_weight()  # dense (out, in): one GEMM on x either way
        if inner is base and base is not None and _is_plain_dense(base, delta.dtype):
            # (W0 + ΔW) x in one GEMM: a forward and a backward GEMM fewer than W0 x + ΔW x.
            bias = base.bias if isinstance(base.bias, torch.Tensor) else None
            return F.linear(x.to(delta.dtype), weights.read_weight(base) + delta, bias)
        out = inner(x)
        return out + F.linear(x.to(delta.dtype), delta).to(out.dtype)

    def extra_repr(self) -> str:
        return f"n_frequency={self.n_frequency}, scaling={self.scaling:g}"


def _is_plain_dense(base: nn.Module, dtype: torch.dtype) -> bool:
    """Is ``F.linear`` on the base weight exactly what the base would do? An nn.Linear or GPT-2
    Conv1D (no subclass, e.g. a quantized layer), in ``dtype``, with no forward hook to run."""
    if type(base) is not nn.Linear and not weights.is_transposed_linear(base):
        return False
    if base._forward_hooks or base._forward_pre_hooks:
        return False
    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return False
    return weights.base_weight(base).dtype == dtype


def create_fourierft(base: nn.Module, name: str, config: AdapterConfig) -> FourierFTLinear:
    """Build the FourierFT adapter of ``base`` (the module ``name``)."""
    assert isinstance(config, FourierFTConfig)
    if not supports_fourierft(base):
        raise UnsupportedLayerError(
            f"FourierFT cannot adapt {name} ({type(base).__name__}); it supports nn.Linear and GPT-2 Conv1D. "
            "Remove it from target_modules or add it to exclude_modules."
        )
    in_features, out_features = weights.linear_features(base)
    n = config.n_frequency_for(name)
    if n > in_features * out_features:
        raise ConfigError(
            f"FourierFT: n_frequency={n} for {name} exceeds its {out_features} x {in_features} = "
            f"{in_features * out_features} spectral entries; lower n_frequency (or set n_frequency_pattern for it)."
        )
    with torch.device(weights.module_device(base)):
        adapter = FourierFTLinear(in_features, out_features, n, float(config.scaling), config.random_loc_seed)
        adapter.reset(config.init_weights)
    return adapter.to(dtype=weights.adapter_dtype(base))


def supports_fourierft(module: nn.Module) -> bool:
    return weights.is_linear(module)
