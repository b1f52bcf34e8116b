"""LoKr adapters for dense and convolution layers.

Low-rank Kronecker product, from LyCORIS (Yeh et al., "Navigating Text-To-Image Customization:
From LyCORIS Fine-Tuning to Model Evaluation", 2024).

Update rule: ``h = W0 x + op(x, ΔW)`` with ``ΔW = kron(w1, w2) · alpha / r`` (``op`` is the base
layer's linear map or convolution). Each dimension is split in two, ``out = a · b`` and
``in = c · d`` (:func:`factorize`), so that ``w1: (a, c)`` and ``w2: (b, d)``.

Shapes (PEFT's names): ``lokr_w1: (a, c)``, or ``lokr_w1_a: (a, r)``, ``lokr_w1_b: (r, c)`` when
``decompose_both`` and ``r < max(a, c) / 2``. ``lokr_w2: (b, d, *kernel)`` when ``r >= max(b, d) / 2``;
else ``lokr_w2_a: (b, r)``, ``lokr_w2_b: (r, d · prod(kernel))``, or with ``use_effective_conv2d``
and a kernel > 1 a Tucker form ``lokr_t2: (r, r, kh, kw)``, ``lokr_w2_a: (r, b)``, ``lokr_w2_b: (r, d)``.
For convolutions ``in`` counts the channels of one group. The product is reshaped to the base
weight's shape exactly as PEFT does, so that checkpoints mean the same in both libraries.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from deltatune import weights
from deltatune.methods.lokr.config import LoKrConfig
from deltatune.methods.lycoris_common import LycorisAdapter, check_layer, kaiming_, tucker


def factorize(dim: int, factor: int = -1) -> tuple[int, int]:
    """Split ``dim`` into ``(m, n)`` with ``m · n = dim`` (PEFT's and LyCORIS's rule).

    ``factor`` dividing ``dim`` gives ``(factor, dim // factor)`` as is. Otherwise ``m`` walks up the
    divisors of ``dim`` (none above ``factor``; any with -1) until ``m >= dim / m``; the pair is
    returned smaller first. E.g. 128 -> (8, 16), 256 -> (16, 16), 127 -> (1, 127), (128, 4) -> (4, 32).
    """
    if factor > 0 and dim % factor == 0:
        return factor, dim // factor
    limit = dim if factor == -1 else factor
    low = [d for d in range(1, math.isqrt(dim) + 1) if dim % d == 0]
    divisors = sorted({*low, *(dim // d for d in low)})
    m = 1
    for d in divisors[1:]:
        if m >= dim // m or d > limit:
            break
        m = d
    n = dim // m
    return (m, n) if m <= n else (n, m)


class LokrAdapter(LycorisAdapter):
    """LoKr on one ``nn.Linear``, ``nn.Conv1d`` or ``nn.Conv2d``: ``h = W0 x + op(x, kron(w1, w2) · s)``."""

    def __init__(
        self,
        base: nn.Module,
        r: int,
        alpha: float,
        config: LoKrConfig,
    ) -> None:
        super().__init__(base, r, alpha, config.rank_dropout, config.module_dropout)
        self.rescale_ranks = config.rank_dropout_scale
        out_f, in_f = self.shape[:2]
        kernel = self.kernel
        a, b = factorize(out_f, config.decompose_factor)
        c, d = factorize(in_f, config.decompose_factor)
        if config.decompose_both and r < max(a, c) / 2:
            self.lokr_w1_a = nn.Parameter(torch.empty(a, r))
            self.lokr_w1_b = nn.Parameter(torch.empty(r, c))
        else:
            self.lokr_w1 = nn.Parameter(torch.empty(a, c))
        if r >= max(b, d) / 2:
            self.lokr_w2 = nn.Parameter(torch.empty(b, d, *kernel))
        elif config.use_effective_conv2d and math.prod(kernel) > 1:
            self.lokr_t2 = nn.Parameter(torch.empty(r, r, kernel[0], kernel[1] if len(kernel) > 1 else 1))
            self.lokr_w2_a = nn.Parameter(torch.empty(r, b))
            self.lokr_w2_b = nn.Parameter(torch.empty(r, d))
        else:
            self.lokr_w2_a = nn.Parameter(torch.empty(b, r))
            self.lokr_w2_b = nn.Parameter(torch.empty(r, d * math.prod(kernel)))

    def reset(self, init: bool | str) -> None:
        """Every factor Kaiming-uniform; then ``True`` zeroes w1 (or w1_a), ``"lycoris"`` w2 (or w2_b)."""
        kaiming_(*self.parameters())
        params = self._parameters
        if init is True:
            nn.init.zeros_(self.lokr_w1 if "lokr_w1" in params else self.lokr_w1_a)
        elif init == "lycoris":
            nn.init.zeros_(self.lokr_w2 if "lokr_w2" in params else self.lokr_w2_b)

    def delta_weight(self) -> torch.Tensor:
        params = self._parameters
        w1: torch.Tensor = self.lokr_w1 if "lokr_w1" in params else self.lokr_w1_a @ self.lokr_w1_b
        w2: torch.Tensor
        if "lokr_w2" in params:
            w2 = self.lokr_w2
        elif "lokr_t2" in params:
            w2 = tucker(self.lokr_t2, self.lokr_w2_a, self.lokr_w2_b)
        else:
            w2 = self.lokr_w2_a @ self.lokr_w2_b
        if w2.dim() == 4:
            w1 = w1[:, :, None, None]
        return kron(w1 * self.scaling, w2).reshape(self.shape)


def kron(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The Kronecker product, as ``torch.kron`` defines it, by broadcasting.

    The operand with fewer dimensions gets leading 1s: a 2-d ``w1`` with the 3-d full ``w2`` of a
    Conv1d gives ``(b, a · d, c · k)``, which the caller reshapes to the base weight's shape, as PEFT
    does, so checkpoints mean the same in both libraries. (``torch.kron`` itself can fail on
    size-1 dimensions with unusual strides, as einsum produces for the Tucker form.)
    """
    dims = max(a.dim(), b.dim())
    a = a.reshape((1,) * (dims - a.dim()) + tuple(a.shape))
    b = b.reshape((1,) * (dims - b.dim()) + tuple(b.shape))
    spread_a = [n for size in a.shape for n in (size, 1)]
    spread_b = [n for size in b.shape for n in (1, size)]
    out = [sa * sb for sa, sb in zip(a.shape, b.shape, strict=True)]
    return (a.reshape(spread_a) * b.reshape(spread_b)).reshape(out)


def create_lokr(base: nn.Module, name: str, config: LoKrConfig) -> LokrAdapter:
    """Build the LoKr adapter for ``base`` (the module ``name`` of the model)."""
    check_layer(base, name, "LoKr")
    r, alpha = config.rank_and_alpha(name)
    # Build on the base's device: on "meta" nothing is allocated, so injection stays fast.
    with torch.device(weights.module_device(base)):
        adapter = LokrAdapter(base, r, alpha, config)
        adapter.reset(config.init_weights)
    return adapter.to(dtype=weights.adapter_dtype(base))
