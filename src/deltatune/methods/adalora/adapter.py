"""AdaLoRA adapters: a low-rank update in SVD form whose ranks the allocator prunes in training.

Zhang et al., "Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning" (ICLR 2023).

Update rule: ``h = W0 x + c * P (Λ ⊙ Q) dropout(x)`` with ``c = s / (ranknum + 1e-5)``,
``s = lora_alpha`` (``r`` when lora_alpha <= 0) and ``ranknum = init_r``, so the update scales as
``lora_alpha / init_r`` like LoRA's. Shapes: ``Q = lora_A: (r, in)``, ``Λ = lora_E: (r, 1)``,
``P = lora_B: (out, r)``; on a Conv2d ``Q: (r, in * kh * kw)`` and the update is the convolution
with ``c * P (Λ ⊙ Q)`` reshaped to the kernel. The allocator (``allocator.py``) zeroes entries of Λ
to prune ranks; a saved adapter holds only the kept ranks (``config.rank_pattern`` says which),
so ``r`` is ``init_r`` for a new adapter and the number of kept ranks for a loaded one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from deltatune import weights
from deltatune.errors import UnsupportedLayerError
from deltatune.layer import Adapter
from deltatune.methods.adalora.config import AdaLoraConfig


class SvdAdapter(Adapter):
    """What the dense and the Conv2d form share: the P Λ Q triplets, scale, dropout and the
    allocator's running statistics (non-persistent buffers, created at the first allocation step)."""

    additive = True  # W0 x + c P (Λ ⊙ Q) x: commutes with other additive adapters when merging

    def __init__(self, fan_in: int, out_features: int, kept: list[int], init_r: int, alpha: float, dropout: float):
        super().__init__()
        r = len(kept)
        self.r = r
        self.init_r = init_r
        self.kept = tuple(kept)  # which of the init_r ranks the rows of P, Λ, Q are
        # What PEFT keeps in its ``ranknum``: init_r, also once a loaded adapter holds fewer ranks.
        self.ranknum = float(init_r) if r > 0 else 0.0
        self.scaling = float(alpha) if alpha > 0 else float(r)
        self.lora_dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Parameter(torch.randn(r, fan_in))
        self.lora_E = nn.Parameter(torch.randn(r, 1))
        self.lora_B = nn.Parameter(torch.randn(out_features, r))

    @property
    def factor(self) -> float:
        """``c``: the scale of ``P (Λ ⊙ Q)``."""
        return self.scaling / (self.ranknum + 1e-5)

    def reset(self, init: bool) -> None:
        """True: Λ = 0 and P, Q ~ N(0, 0.02^2); False: keep the N(0, 1) values of construction."""
        if init:
            with torch.no_grad():
                nn.init.zeros_(self.lora_E)
                nn.init.normal_(self.lora_A, mean=0.0, std=0.02)
                nn.init.normal_(self.lora_B, mean=0.0, std=0.02)

    def product(self) -> torch.Tensor:
        """``c * P (Λ ⊙ Q)``: (out, fan_in)."""
        return (self.lora_B @ (self.lora_A * self.lora_E)) * self.factor

    def extra_repr(self) -> str:
        return f"r={self.r}, init_r={self.init_r}, scaling={self.scaling:g}"


class SvdLinear(SvdAdapter):
    """AdaLoRA on ``nn.Linear`` and GPT-2 ``Conv1D`` (canonical (out, in) layout, see weights.py)."""

    def forward(self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        out = inner(x)
        a = self.lora_A
        h = F.linear(self.lora_dropout(x.to(a.dtype)), a * self.lora_E)  # (..., r)
        b = self.lora_B
        if out.dtype == b.dtype:
            # One fused GEMM: out + c * h @ P^T.
            # (flatten, not reshape(-1, r): a layer pruned to r = 0 gives empty tensors.)
            flat = torch.addmm(out.flatten(0, -2), h.flatten(0, -2), b.t(), alpha=self.factor)
            return flat.view(out.shape)
        return out + (F.linear(h, b) * self.factor).to(out.dtype)

    def delta_weight(self) -> torch.Tensor:
        return self.product()


class SvdConv2d(SvdAdapter):
    """AdaLoRA on ``nn.Conv2d``: the update is a convolution with the reshaped low-rank kernel."""

    def __init__(self, base: nn.Conv2d, kept: list[int], init_r: int, alpha: float, dropout: float) -> None:
        kh, kw = base.kernel_size
        super().__init__(base.in_channels * kh * kw, base.out_channels, kept, init_r, alpha, dropout)
        self.kernel_shape = tuple(base.weight.shape)
        self.stride = base.stride
        self.padding = base.padding
        self.dilation = base.dilation

    def forward(self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        out = inner(x)
        h = self.lora_dropout(x.to(self.lora_A.dtype))
        delta = F.conv2d(h, self.delta_weight(), None, self.stride, self.padding, self.dilation)
        return out + delta.to(out.dtype)

    def delta_weight(self) -> torch.Tensor:
        return self.product().view(self.kernel_shape)


def create_adalora(base: nn.Module, name: str, config: AdaLoraConfig) -> SvdAdapter:
    """The AdaLoRA adapter for ``base`` (module ``name``), with the ranks ``config.rank_pattern`` keeps."""
    kept = config.kept_ranks(name)
    args = (kept, config.init_r, config.lora_alpha, config.lora_dropout)
    adapter: SvdAdapter
    with torch.device(weights.module_device(base)):
        if weights.is_linear(base):
            in_features, out_features = weights.linear_features(base)
            adapter = SvdLinear(in_features, out_features, *args)
        elif isinstance(base, nn.Conv2d) and _plain_conv(base):
            adapter = SvdConv2d(base, *args)
        elif isinstance(base, nn.Conv2d):
            raise UnsupportedLayerError(
                f"AdaLoRA supports Conv2d layers with groups=1 and padding_mode='zeros'; {name} has "
                f"groups={base.groups}, padding_mode={base.padding_mode!r}. Leave it out with exclude_modules."
            )
        else:
            raise UnsupportedLayerError(
                f"AdaLoRA cannot adapt {name} ({type(base).__name__}); it supports Linear, Conv2d and GPT-2 Conv1D. "
                "Remove it from target_modules or add it to exclude_modules."
            )
        adapter.reset(config.init_lora_weights)
    return adapter.to(dtype=weights.adapter_dtype(base))


def _plain_conv(module: nn.Conv2d) -> bool:
    return module.groups == 1 and module.padding_mode == "zeros"


def supports_adalora(module: nn.Module) -> bool:
    return weights.is_linear(module) or (isinstance(module, nn.Conv2d) and _plain_conv(module))
