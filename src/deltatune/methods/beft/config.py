"""BeftConfig: PEFT's BEFT (bias tuning) field names and JSON values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from deltatune.config import AdapterConfig, _help
from deltatune.errors import ConfigError

# Fields of deltatune's AdapterConfig that PEFT's BeftConfig lacks: written only when set, since
# PEFT warns about keys it does not know (and ignores them).
_NOT_IN_PEFT = ("exclude_modules", "layers_to_transform", "layers_pattern")


@dataclass
class BeftConfig(AdapterConfig):
    """Bias tuning: a trainable bias added to the output of each targeted layer.

    ``target_modules=None`` targets every dense layer, convolution and norm that has a bias
    (BitFit). PEFT's own default is narrower (the value projection, per the BEFT paper), and
    PEFT 0.21 adapts ``nn.Linear`` layers only: an adapter on other layer types loads in
    deltatune alone.
    """

    peft_type: ClassVar[str] = "BEFT"

    init_weights: bool = _help("True: the bias deltas start at zero (starts as the base model); False: random.", True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.init_weights, bool):
            raise ConfigError(f"BeftConfig.init_weights must be True or False, got {self.init_weights!r}.")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for key in _NOT_IN_PEFT:
            if out.get(key) is None:
                out.pop(key, None)
        return out
