"""LoHa adapters for dense and convolution layers.

Hyeon-Woo et al., "FedPara: Low-Rank Hadamard Product for Communication-Efficient Federated
Learning" (2022), as packaged by LyCORIS.

Update rule: ``h = W0 x + op(x, ΔW)`` with ``ΔW = (w1_a @ w1_b) ⊙ (w2_a @ w2_b) · alpha / r`` (``op``
is the base layer's linear map or convolution). The Hadamard product of two rank-r matrices
reaches rank r², at the parameter cost of rank 2r.

Shapes (PEFT's names): dense ``hada_w{1,2}_a: (out, r)``, ``hada_w{1,2}_b: (r, in)``; convolution
``hada_w{1,2}_b: (r, in/groups · prod(kernel))``, reshaped to ``(out, in/groups, *kernel)``. With
``use_effective_conv2d`` and a kernel > 1, each factor is a Tucker form: core ``hada_t{1,2}:
(r, r, kh, kw)`` (``kw = 1`` for Conv1d), ``hada_w{1,2}_a: (r, out)``, ``hada_w{1,2}_b: (r, in/groups)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from deltatune import weights
from deltatune.methods.loha.config import LoHaConfig
from deltatune.methods.lycoris_common import LycorisAdapter, check_layer, kaiming_, tucker


class LohaAdapter(LycorisAdapter):
    """LoHa on one ``nn.Linear``, ``nn.Conv1d`` or ``nn.Conv2d``: ``h = W0 x + op(x, ΔW)``."""

    def __init__(
        self, base: nn.Module, r: int, alpha: float, rank_dropout: float, module_dropout: float, effective_conv: bool
    ) -> None:
        super().__init__(base, r, alpha, rank_dropout, module_dropout)
        out_f, in_f = self.shape[:2]
        kernel = self.kernel
        self.use_tucker = effective_conv and math.prod(kernel) > 1
        if self.use_tucker:
            core = (r, r, kernel[0], kernel[1] if len(kernel) > 1 else 1)
            self.hada_w1_a = nn.Parameter(torch.empty(r, out_f))
            self.hada_w1_b = nn.Parameter(torch.empty(r, in_f))
            self.hada_t1 = nn.Parameter(torch.empty(core))
            self.hada_w2_a = nn.Parameter(torch.empty(r, out_f))
            self.hada_w2_b = nn.Parameter(torch.empty(r, in_f))
            self.hada_t2 = nn.Parameter(torch.empty(core))
        else:
            flat_in = in_f * math.prod(kernel)
            self.hada_w1_a = nn.Parameter(torch.empty(out_f, r))
            self.hada_w1_b = nn.Parameter(torch.empty(r, flat_in))
            self.hada_w2_a = nn.Parameter(torch.empty(out_f, r))
            self.hada_w2_b = nn.Parameter(torch.empty(r, flat_in))

    def reset(self, init: bool) -> None:
        """Every factor Kaiming-uniform; ``init=True`` zeroes ``hada_w2_b`` so that ΔW = 0."""
        kaiming_(*self.parameters())
        if init:
            nn.init.zeros_(self.hada_w2_b)

    def delta_weight(self) -> torch.Tensor:
        if self.use_tucker:
            first = tucker(self.hada_t1, self.hada_w1_a, self.hada_w1_b)
            second = tucker(self.hada_t2, self.hada_w2_a, self.hada_w2_b)
            return (first * second * self.scaling).reshape(self.shape)
        # The scale goes on the smallest tensor, (out, r), before the products.
        first = (self.hada_w1_a * self.scaling) @ self.hada_w1_b
        second = self.hada_w2_a @ self.hada_w2_b
        return (first * second).view(self.shape)


def create_loha(base: nn.Module, name: str, config: LoHaConfig) -> LohaAdapter:
    """Build the LoHa adapter for ``base`` (the module ``name`` of the model)."""
    check_layer(base, name, "LoHa")
    r, alpha = config.rank_and_alpha(name)
    # Build on the base's device: on "meta" nothing is allocated, so injection stays fast.
    with torch.device(weights.module_device(base)):
        adapter = LohaAdapter(base, r, alpha, config.rank_dropout, config.module_dropout, config.use_effective_conv2d)
        adapter.reset(bool(config.init_weights))
    return adapter.to(dtype=weights.adapter_dtype(base))
