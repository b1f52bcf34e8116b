"""FourierFTConfig: PEFT's field names and JSON values."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from deltatune.config import AdapterConfig, _help
from deltatune.errors import ConfigError

BIAS_MODES = ("none", "all", "fourier_only")


@dataclass
class FourierFTConfig(AdapterConfig):
    """Fourier fine-tuning: ``ΔW = scaling * Re(IFFT2(spectrum at seeded random locations))``."""

    peft_type: ClassVar[str] = "FOURIERFT"
    unsupported_fields: ClassVar[dict[str, Any]] = {}

    n_frequency: int = _help("Trained spectral coefficients per layer (at most in_features * out_features).", 1000)
    scaling: float = _help("Scale of the update, like LoRA's alpha (100-150 for RoBERTa, 300 for Llama).", 150.0)
    random_loc_seed: int = _help("Seed of the random spectral locations (the same for every layer).", 777)
    fan_in_fan_out: bool = _help("Set for layers storing (in, out) weights, e.g. GPT-2 Conv1D (auto-detected).", False)
    bias: str = _help("Which biases train: 'none', 'all', or 'fourier_only' (biases of adapted layers).", "none")
    n_frequency_pattern: dict[str, int] = _help(
        "Per-module n_frequency: {regex on the name after a dot, or the full module name: n}.", factory=dict
    )
    init_weights: bool = _help("True: spectrum = 0 (starts as the base model); False: spectrum ~ N(0, 1).", False)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive("n_frequency", self.n_frequency)
        if (
            not isinstance(self.scaling, (int, float))
            or isinstance(self.scaling, bool)
            or not math.isfinite(self.scaling)
        ):
            raise ConfigError(f"FourierFTConfig.scaling must be a finite number, got {self.scaling!r}.")
        if not isinstance(self.random_loc_seed, int) or isinstance(self.random_loc_seed, bool):
            raise ConfigError(f"FourierFTConfig.random_loc_seed must be an integer seed, got {self.random_loc_seed!r}.")
        if self.bias not in BIAS_MODES:
            raise ConfigError(f"FourierFTConfig.bias={self.bias!r} is unknown; use one of {list(BIAS_MODES)}.")
        for name in ("init_weights", "fan_in_fan_out"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"FourierFTConfig.{name} must be True or False, got {getattr(self, name)!r}.")
        _check_regex_target_without_layers(self)
        if not isinstance(self.n_frequency_pattern, dict):
            raise ConfigError(f"FourierFTConfig.n_frequency_pattern must be a dict, got {self.n_frequency_pattern!r}.")
        for key, value in self.n_frequency_pattern.items():
            try:
                re.compile(key)
            except re.error as exc:
                raise ConfigError(f"n_frequency_pattern key {key!r} is not a valid regex: {exc}.") from exc
            _check_positive(f"n_frequency_pattern[{key!r}]", value)

    def n_frequency_for(self, module_name: str) -> int:
        """n_frequency of one module: the first pattern matching the end of its name after a dot, or its full name."""
        key = next((k for k in self.n_frequency_pattern if re.match(rf".*\.{k}$", module_name)), module_name)
        return int(self.n_frequency_pattern.get(key, self.n_frequency))


def _check_positive(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"FourierFTConfig.{name} must be a positive integer, got {value!r}.")


def _check_regex_target_without_layers(config: AdapterConfig) -> None:
    """A regex target_modules cannot be combined with layers_to_transform / layers_pattern (PEFT refuses it)."""
    if isinstance(config.target_modules, str):
        for name in ("layers_to_transform", "layers_pattern"):
            if getattr(config, name) is not None:
                raise ConfigError(
                    f"FourierFTConfig: {name} cannot be used when target_modules is a string (a regex or "
                    "'all-linear'); put the layer indexes into the regex, or give target_modules as a list of names."
                )
