"""LoKrConfig: PEFT's field names and JSON values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from deltatune.config import _help
from deltatune.errors import ConfigError
from deltatune.methods.lycoris_common import LycorisConfig


@dataclass
class LoKrConfig(LycorisConfig):
    """Low-rank Kronecker product: ``ΔW = kron(w1, w2) · alpha / r``, either factor full or low-rank.

    ``init_weights=True`` zeroes ``w1`` (or ``w1_a``); ``"lycoris"`` zeroes ``w2`` (or ``w2_b``)
    as the LyCORIS package does; both start as the base model. ``False``: random factors.
    """

    peft_type: ClassVar[str] = "LOKR"
    init_modes: ClassVar[tuple[Any, ...]] = (True, False, "lycoris")

    init_weights: bool | str = _help(
        "True: w1 = 0; 'lycoris': w2 = 0 (both start as the base model); False: random factors.", True
    )
    decompose_both: bool = _help("Also write the first (small) Kronecker factor as w1_a @ w1_b when r is small.", False)
    decompose_factor: int = _help(
        "Split each dimension as (f, dim / f) when f divides it; -1: the split nearest the square root.", -1
    )
    rank_dropout_scale: bool = _help("Divide the rows kept by rank dropout by the fraction kept.", False)

    def __post_init__(self) -> None:
        super().__post_init__()
        factor = self.decompose_factor
        if not isinstance(factor, int) or isinstance(factor, bool) or (factor != -1 and factor <= 0):
            raise ConfigError(
                f"LoKrConfig.decompose_factor must be -1 (split near the square root) or a positive integer, "
                f"got {factor!r}."
            )
