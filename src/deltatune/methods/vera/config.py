"""VeraConfig: PEFT's field names and JSON values."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from deltatune.config import AdapterConfig, _help
from deltatune.errors import ConfigError

BIAS_MODES = ("none", "all", "vera_only")


@dataclass
class VeraConfig(AdapterConfig):
    """Vector-based random matrix adaptation: ``h = W0 x + Λ_b B Λ_d A x``, A and B frozen and shared."""

    peft_type: ClassVar[str] = "VERA"

    r: int = _help("Rows of the shared random projection A (columns of B); VeRA uses larger values than LoRA.", 256)
    projection_prng_key: int = _help("Seed of the shared random projections vera_A and vera_B.", 0)
    save_projection: bool = _help("Save vera_A / vera_B with the adapter (else they are rebuilt from the seed).", True)
    vera_dropout: float = _help("Dropout on the adapter's input during training.", 0.0)
    d_initial: float = _help("Initial value of every entry of vera_lambda_d (small values, <= 0.1, work best).", 0.1)
    fan_in_fan_out: bool = _help("Set for layers storing (in, out) weights, e.g. GPT-2 Conv1D (auto-detected).", False)
    bias: str = _help("Which biases train: 'none', 'all', or 'vera_only' (biases of adapted layers).", "none")
    init_weights: bool = _help(
        "True: vera_lambda_b = 0, vera_lambda_d = d_initial (starts as the base model); False: random.", True
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            raise ConfigError(f"VeraConfig.r must be a positive integer, got {self.r!r}.")
        if not isinstance(self.projection_prng_key, int) or isinstance(self.projection_prng_key, bool):
            raise ConfigError(
                f"VeraConfig.projection_prng_key must be an integer seed, got {self.projection_prng_key!r}."
            )
        if not isinstance(self.vera_dropout, (int, float)) or not 0.0 <= self.vera_dropout < 1.0:
            raise ConfigError(f"VeraConfig.vera_dropout must be in [0, 1), got {self.vera_dropout!r}.")
        if not isinstance(self.d_initial, (int, float)) or not math.isfinite(self.d_initial):
            raise ConfigError(f"VeraConfig.d_initial must be a finite number, got {self.d_initial!r}.")
        if self.bias not in BIAS_MODES:
            raise ConfigError(f"VeraConfig.bias={self.bias!r} is unknown; use one of {list(BIAS_MODES)}.")
        for name in ("save_projection", "init_weights", "fan_in_fan_out"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"VeraConfig.{name} must be True or False, got {getattr(self, name)!r}.")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        # PEFT's VeraConfig has no exclude_modules and warns on the key: write it only when it is used.
        if out.get("exclude_modules") is None:
            out.pop("exclude_modules", None)
        return out
