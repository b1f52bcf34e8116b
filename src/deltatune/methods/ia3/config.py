"""IA3Config: PEFT's field names and JSON values."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from deltatune.config import AdapterConfig, _help
from deltatune.errors import ConfigError


@dataclass
class IA3Config(AdapterConfig):
    """(IA)³: learned vectors that rescale a layer's output, or its input on feed-forward layers.

    ``init_ia3_weights=True`` starts every vector at ones (the base model).
    """

    peft_type: ClassVar[str] = "IA3"

    feedforward_modules: list[str] | str | None = _help(
        "Targets whose input (not output) is scaled: a regex (full match) or names/suffixes; a subset of "
        "target_modules. [] when no target is a feed-forward layer."
    )
    fan_in_fan_out: bool = _help("Set for layers storing (in, out) weights, e.g. GPT-2 Conv1D (auto-detected).", False)
    init_ia3_weights: bool = _help("True: vectors start at ones (the base model); False: random vectors.", True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.feedforward_modules, (set, tuple)):
            self.feedforward_modules = sorted(self.feedforward_modules)
        if self.target_modules is None:
            raise ConfigError(
                "IA3Config needs target_modules and feedforward_modules (deltatune has no per-model defaults "
                'for IA3), e.g. target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"].'
            )
        if self.feedforward_modules is None:
            raise ConfigError(
                "IA3Config.feedforward_modules is not set; name the targets whose input is scaled, e.g. "
                'feedforward_modules=["down_proj"], or [] if none of target_modules is a feed-forward layer.'
            )
        ff = self.feedforward_modules
        if isinstance(ff, list) and not all(isinstance(m, str) and m for m in ff):
            raise ConfigError(f"feedforward_modules must hold non-empty strings, got {ff!r}.")
        if isinstance(ff, str):
            try:
                re.compile(ff)
            except re.error as exc:
                raise ConfigError(f"feedforward_modules {ff!r} is not a valid regex: {exc}.") from exc
        if isinstance(ff, list) and isinstance(self.target_modules, list):
            extra = sorted(set(ff) - set(self.target_modules))
            if extra:
                raise ConfigError(
                    f"feedforward_modules must be a subset of target_modules; {extra} are not targets. "
                    "Add them to target_modules or remove them from feedforward_modules."
                )
        if self.layers_to_transform is not None or self.layers_pattern is not None:
            raise ConfigError(
                "IA3 adapters have no layers_to_transform / layers_pattern in the PEFT format; select "
                r'layers with a regex target_modules instead, e.g. r".*layers\.(0|1)\..*(k_proj|v_proj)".'
            )
        if not isinstance(self.init_ia3_weights, bool):
            raise ConfigError(f"IA3Config.init_ia3_weights must be True or False, got {self.init_ia3_weights!r}.")

    def is_feedforward(self, module_name: str) -> bool:
        """PEFT's rule: a regex must match the whole name; a list entry matches a name ending with it."""
        ff = self.feedforward_modules
        if isinstance(ff, str):
            return re.fullmatch(ff, module_name) is not None
        return any(module_name.endswith(entry) for entry in ff or [])

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        # PEFT's IA3Config has no such fields (and warns on unknown keys); they are always None here.
        del out["layers_to_transform"], out["layers_pattern"]
        return out
