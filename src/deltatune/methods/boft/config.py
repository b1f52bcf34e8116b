"""BOFTConfig: PEFT's field names and JSON values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from deltatune.config import AdapterConfig, _help
from deltatune.errors import ConfigError
from deltatune.methods.orthogonal import divisors

BIAS_MODES = ("none", "all", "boft_only")


@dataclass
class BOFTConfig(AdapterConfig):
    """Butterfly OFT: ``h = s * (W M^T x)`` with ``M`` a product of permuted block-diagonal rotations."""

    peft_type: ClassVar[str] = "BOFT"

    boft_block_size: int = _help("Size of each orthogonal block (0: derive it from boft_block_num).", 4)
    boft_block_num: int = _help("Number of blocks per butterfly factor (0: derive it from boft_block_size).", 0)
    boft_n_butterfly_factor: int = _help("Butterfly factors in the product (1: plain block-diagonal OFT).", 1)
    boft_dropout: float = _help("While training, the share of blocks of one factor replaced by the identity.", 0.0)
    fan_in_fan_out: bool = _help("Set for layers storing (in, out) weights, e.g. GPT-2 Conv1D (auto-detected).", False)
    bias: str = _help("Which biases train: 'none', 'all', or 'boft_only' (biases of adapted layers).", "none")
    init_weights: bool = _help("True: identity rotation and unit scale (the base model); False: random.", True)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("boft_block_size", "boft_block_num", "boft_n_butterfly_factor"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"BOFTConfig.{name} must be a non-negative integer, got {value!r}.")
        size, num, factors = self.boft_block_size, self.boft_block_num, self.boft_n_butterfly_factor
        if size == 0 and num == 0:
            raise ConfigError("BOFTConfig needs boft_block_size or boft_block_num; set one, e.g. boft_block_size=4.")
        if size and num:
            raise ConfigError(
                f"BOFTConfig sets both boft_block_size={size} and boft_block_num={num}, but their product must "
                f"equal each layer's features, so only one may be given: use boft_block_size={size}, "
                f"boft_block_num=0 or boft_block_size=0, boft_block_num={num}."
            )
        if factors < 1:
            raise ConfigError(f"BOFTConfig.boft_n_butterfly_factor must be 1 or more, got {factors}.")
        if factors > 1:
            spread = 2 ** (factors - 1)
            if num and num % spread:
                raise ConfigError(
                    f"BOFTConfig: boft_n_butterfly_factor={factors} needs boft_block_num to be a multiple of "
                    f"2^{factors - 1}={spread}, got {num}; use a lower factor or a block_num such as {2 * spread}."
                )
            if num and num % 2:
                raise ConfigError(f"BOFTConfig: with butterfly factors boft_block_num must be even, got {num}.")
            if size % 2:
                raise ConfigError(
                    f"BOFTConfig: with butterfly factors boft_block_size must be even, got {size}; "
                    "use an even size or boft_n_butterfly_factor=1."
                )
        if not isinstance(self.boft_dropout, (int, float)) or not 0.0 <= self.boft_dropout < 1.0:
            raise ConfigError(f"BOFTConfig.boft_dropout must be in [0, 1), got {self.boft_dropout!r}.")
        for name in ("init_weights", "fan_in_fan_out"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"BOFTConfig.{name} must be True or False, got {getattr(self, name)!r}.")
        if self.bias not in BIAS_MODES:
            raise ConfigError(f"BOFTConfig.bias={self.bias!r} is unknown; use one of {list(BIAS_MODES)}.")

    def blocks_for(self, features: int, module_name: str) -> tuple[int, int]:
        """(blocks per factor, block size) for a layer rotating ``features`` inputs."""
        spread = 2 ** (self.boft_n_butterfly_factor - 1)
        butterfly = self.boft_n_butterfly_factor > 1
        sizes = [
            d
            for d in divisors(features)
            if (features // d) % spread == 0 and not (butterfly and (d % 2 or (features // d) % 2))
        ]
        if self.boft_block_size:
            size = self.boft_block_size
            if size not in sizes:
                raise ConfigError(
                    f"BOFT: boft_block_size={size} with boft_n_butterfly_factor={self.boft_n_butterfly_factor} does "
                    f"not fit the {features} input features of {module_name} (they must be a multiple of "
                    f"block_size x 2^(factor-1) = {size * spread}); valid block sizes there are {sizes}. Change it, "
                    "lower the butterfly factor, or leave the layer out with exclude_modules."
                )
            return features // size, size
        num = self.boft_block_num
        if features % num or features // num not in sizes:
            raise ConfigError(
                f"BOFT: boft_block_num={num} with boft_n_butterfly_factor={self.boft_n_butterfly_factor} does not "
                f"fit the {features} input features of {module_name}; valid block numbers there are "
                f"{sorted(features // d for d in sizes)}. Change it, lower the butterfly factor, or leave the layer "
                "out with exclude_modules."
            )
        return num, features // num
