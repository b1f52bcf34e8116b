"""LoHaConfig: PEFT's field names and JSON values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from deltatune.methods.lycoris_common import LycorisConfig


@dataclass
class LoHaConfig(LycorisConfig):
    """Low-rank Hadamard product: ``ΔW = (w1_a w1_b) ⊙ (w2_a w2_b) · alpha / r``.

    ``init_weights=True`` zeroes ``hada_w2_b`` so the adapter starts as the base model.
    """

    peft_type: ClassVar[str] = "LOHA"
