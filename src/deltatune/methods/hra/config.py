"""HRAConfig: PEFT's field names and JSON values."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

from deltatune.config import AdapterConfig, _help
from deltatune.errors import ConfigError

BIAS_MODES = ("none", "all", "hra_only")


@dataclass
class HRAConfig(AdapterConfig):
    """Householder reflection adaptation: ``W' = W H_1 ... H_r`` with ``H_i = I - 2 u_i u_i^T / |u_i|^2``."""

    peft_type: ClassVar[str] = "HRA"

    r: int = _help("Number of Householder reflections per layer (even, for the identity start).", 8)
    apply_GS: bool = _help("Orthonormalise the reflection vectors (Gram-Schmidt): W' = W (I - 2 Q Q^T).", False)
    init_weights: bool = _help(
        "True: reflections in equal pairs, so the product starts as the identity (needs an even r and "
        "apply_GS=False); False: random vectors.",
        True,
    )
    bias: str = _help("Which biases train: 'none', 'all', or 'hra_only' (biases of adapted layers).", "none")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            raise ConfigError(f"HRAConfig.r must be a positive integer, got {self.r!r}.")
        for name in ("apply_GS", "init_weights"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"HRAConfig.{name} must be True or False, got {getattr(self, name)!r}.")
        if self.bias not in BIAS_MODES:
            raise ConfigError(f"HRAConfig.bias={self.bias!r} is unknown; use one of {list(BIAS_MODES)}.")
        if isinstance(self.target_modules, str):
            for name in ("layers_to_transform", "layers_pattern"):
                if getattr(self, name) is not None:
                    raise ConfigError(
                        f"HRAConfig: {name} cannot be used when target_modules is a string (a regex or "
                        "'all-linear'); put the layer indexes into the regex, or give target_modules as a list."
                    )
        if self.init_weights and self.r % 2:
            warnings.warn(
                f"HRAConfig: r={self.r} is odd, so the reflections cannot start in equal pairs and the adapter "
                "will not start as the base model; use an even r.",
                stacklevel=3,
            )
