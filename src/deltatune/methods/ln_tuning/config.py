"""LNTuningConfig: PEFT's field names and JSON values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from deltatune.config import AdapterConfig

# Fields of deltatune's AdapterConfig that PEFT's LNTuningConfig lacks: written only when set,
# since PEFT warns about keys it does not know.
_NOT_IN_PEFT = ("layers_to_transform", "layers_pattern")


@dataclass
class LNTuningConfig(AdapterConfig):
    """LayerNorm tuning: each targeted norm layer runs a trainable copy of itself.

    ``target_modules=None`` picks the norms of each block for known model types (PEFT's table,
    plus the BERT family's ``LayerNorm``).
    """

    peft_type: ClassVar[str] = "LN_TUNING"

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for key in _NOT_IN_PEFT:
            if out.get(key) is None:
                out.pop(key, None)
        return out
