"""BottleneckConfig: bottleneck adapters, a deltatune method (PEFT has none)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from deltatune.config import AdapterConfig, _help
from deltatune.errors import ConfigError

NON_LINEARITIES = ("relu", "gelu", "swish", "tanh")
PLACEMENTS = ("sequential", "parallel")
STYLES = ("houlsby", "pfeiffer")


@dataclass
class BottleneckConfig(AdapterConfig):
    """Bottleneck adapters on the output of each targeted module.

    Sequential: ``h = f(x) + s * up(act(down(f(x))))``; parallel: ``h = f(x) + s * up(act(down(x)))``.
    ``target_modules=None`` uses the ``style`` preset for the model type ("houlsby" when unset).
    Saved as peft_type ``DELTATUNE_BOTTLENECK``, which PEFT cannot load.
    """

    peft_type: ClassVar[str] = "DELTATUNE_BOTTLENECK"

    reduction_factor: float | None = _help(
        "Bottleneck size = features / reduction_factor (default 16 unless bottleneck_size is set)."
    )
    bottleneck_size: int | None = _help("Bottleneck size, the same for every layer (instead of reduction_factor).")
    non_linearity: str = _help(f"Activation between down and up projection: one of {list(NON_LINEARITIES)}.", "relu")
    placement: str = _help(
        "'sequential': the adapter reads the module's output (Houlsby, Pfeiffer); "
        "'parallel': it reads the module's input and adds to its output (He et al.).",
        "sequential",
    )
    scaling: float = _help("Factor s on the adapter's output.", 1.0)
    init_weights: bool = _help("True: up projection zero (starts as the base model); False: random.", True)
    style: str | None = _help(
        "Preset targets when target_modules is None: 'houlsby' (attention and feed-forward outputs) "
        "or 'pfeiffer' (feed-forward output only)."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reduction_factor is not None and self.bottleneck_size is not None:
            raise ConfigError(
                "BottleneckConfig: set reduction_factor or bottleneck_size, not both "
                f"(got {self.reduction_factor!r} and {self.bottleneck_size!r})."
            )
        if self.bottleneck_size is None and self.reduction_factor is None:
            self.reduction_factor = 16
        if self.bottleneck_size is not None and (
            not isinstance(self.bottleneck_size, int)
            or isinstance(self.bottleneck_size, bool)
            or self.bottleneck_size < 1
        ):
            raise ConfigError(
                f"BottleneckConfig.bottleneck_size must be a positive integer, got {self.bottleneck_size!r}."
            )
        factor = self.reduction_factor
        if factor is not None and (
            not isinstance(factor, (int, float)) or isinstance(factor, bool) or not math.isfinite(factor) or factor <= 0
        ):
            raise ConfigError(f"BottleneckConfig.reduction_factor must be a positive number, got {factor!r}.")
        if self.non_linearity not in NON_LINEARITIES:
            raise ConfigError(
                f"BottleneckConfig.non_linearity={self.non_linearity!r} is unknown; use one of {list(NON_LINEARITIES)}."
            )
        if self.placement not in PLACEMENTS:
            raise ConfigError(
                f"BottleneckConfig.placement={self.placement!r} is unknown; use one of {list(PLACEMENTS)}."
            )
        if self.style is not None and self.style not in STYLES:
            raise ConfigError(
                f"BottleneckConfig.style={self.style!r} is unknown; use one of {list(STYLES)}, or set target_modules."
            )
        if not isinstance(self.scaling, (int, float)) or not math.isfinite(self.scaling):
            raise ConfigError(f"BottleneckConfig.scaling must be a finite number, got {self.scaling!r}.")
        if not isinstance(self.init_weights, bool):
            raise ConfigError(f"BottleneckConfig.init_weights must be True or False, got {self.init_weights!r}.")

    def size_for(self, features: int) -> int:
        """The bottleneck size for a module with ``features`` features (at least 1)."""
        if self.bottleneck_size is not None:
            return self.bottleneck_size
        assert self.reduction_factor is not None
        return max(1, int(features // self.reduction_factor))
