"""LN tuning: train a copy of each normalisation layer (PEFT's LN_TUNING)."""

from deltatune.methods.ln_tuning.adapter import LAYER_TYPES, LNTuningAdapter, create_ln_tuning, supports_ln_tuning
from deltatune.methods.ln_tuning.config import LNTuningConfig
from deltatune.registry import Method, register_method

register_method(
    Method(
        peft_type=LNTuningConfig.peft_type,
        config_cls=LNTuningConfig,
        create=create_ln_tuning,  # type: ignore[arg-type]
        supports=supports_ln_tuning,
        layer_types=LAYER_TYPES,
    )
)

__all__ = ["LNTuningAdapter", "LNTuningConfig"]
