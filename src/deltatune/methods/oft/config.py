"""OFTConfig: PEFT's field names and JSON values."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from deltatune.config import AdapterConfig, _help
from deltatune.errors import ConfigError
from deltatune.methods.orthogonal import divisors

BIAS_MODES = ("none", "all", "oft_only")
# PEFT warns when it loads a Cayley-Neumann OFT adapter without a "peft_version" of at least
# 0.18.0, the release that fixed the series this package computes; we write that marker.
PEFT_FORMAT_VERSION = "0.18.0"


@dataclass
class OFTConfig(AdapterConfig):
    """Orthogonal finetuning: ``h = W R^T x`` with ``R`` block-diagonal orthogonal (Cayley transform)."""

    peft_type: ClassVar[str] = "OFT"

    r: int = _help("Number of orthogonal blocks per layer (0: derive it from oft_block_size).", 0)
    oft_block_size: int = _help("Size of each orthogonal block (0: derive it from r); must divide the features.", 32)
    module_dropout: float = _help("While training, the share of blocks replaced by the identity in each step.", 0.0)
    fan_in_fan_out: bool = _help("Set for layers storing (in, out) weights, e.g. GPT-2 Conv1D (auto-detected).", False)
    bias: str = _help("Which biases train: 'none', 'all', or 'oft_only' (biases of adapted layers).", "none")
    init_weights: bool = _help("True: every rotation starts as the identity (the base model); False: random.", True)
    coft: bool = _help("Constrained OFT: keep each block's generator within norm eps of zero.", False)
    eps: float = _help("COFT's radius (the freedom of rotation); only used when coft=True.", 6e-5)
    block_share: bool = _help("All blocks of a layer share one rotation.", False)
    use_cayley_neumann: bool = _help(
        "Approximate the Cayley transform by its Neumann series (no matrix solve; nearly orthogonal).", True
    )
    num_cayley_neumann_terms: int = _help("Terms of the Neumann series (more: closer to orthogonal).", 5)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("r", "oft_block_size", "num_cayley_neumann_terms"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"OFTConfig.{name} must be a non-negative integer, got {value!r}.")
        if self.r == 0 and self.oft_block_size == 0:
            raise ConfigError("OFTConfig needs r or oft_block_size; set one of them, e.g. oft_block_size=32.")
        if self.r and self.oft_block_size:
            raise ConfigError(
                f"OFTConfig sets both r={self.r} and oft_block_size={self.oft_block_size}, but r x oft_block_size "
                f"must equal each layer's features, so only one may be given: use r={self.r}, oft_block_size=0 "
                f"or r=0, oft_block_size={self.oft_block_size}."
            )
        if self.num_cayley_neumann_terms < 2:
            raise ConfigError(
                f"OFTConfig.num_cayley_neumann_terms={self.num_cayley_neumann_terms} leaves only the identity, "
                "so the adapter could never train; use 2 or more (default 5)."
            )
        if not isinstance(self.module_dropout, (int, float)) or not 0.0 <= self.module_dropout < 1.0:
            raise ConfigError(f"OFTConfig.module_dropout must be in [0, 1), got {self.module_dropout!r}.")
        if not isinstance(self.eps, (int, float)) or not math.isfinite(self.eps) or self.eps <= 0:
            raise ConfigError(f"OFTConfig.eps must be a positive number, got {self.eps!r}.")
        for name in ("coft", "block_share", "use_cayley_neumann", "init_weights", "fan_in_fan_out"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"OFTConfig.{name} must be True or False, got {getattr(self, name)!r}.")
        if self.bias not in BIAS_MODES:
            raise ConfigError(f"OFTConfig.bias={self.bias!r} is unknown; use one of {list(BIAS_MODES)}.")

    def blocks_for(self, features: int, module_name: str) -> tuple[int, int]:
        """(number of blocks, block size) for a layer rotating ``features`` inputs."""
        valid = divisors(features)
        if self.oft_block_size:
            if features % self.oft_block_size:
                raise ConfigError(
                    f"OFT: oft_block_size={self.oft_block_size} does not divide the {features} input features of "
                    f"{module_name}; valid block sizes there are {valid}. Pick one that divides every targeted "
                    "layer, set r instead, or leave the layer out with exclude_modules."
                )
            return features // self.oft_block_size, self.oft_block_size
        if features % self.r:
            raise ConfigError(
                f"OFT: r={self.r} blocks do not divide the {features} input features of {module_name}; valid r "
                f"there are {valid}. Pick one that divides every targeted layer, set oft_block_size instead, or "
                "leave the layer out with exclude_modules."
            )
        return self.r, features // self.r

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "peft_version": PEFT_FORMAT_VERSION}
