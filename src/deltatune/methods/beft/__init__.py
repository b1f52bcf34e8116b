"""Bias tuning (BitFit / PEFT's BEFT): train a bias delta on each targeted layer."""

from deltatune.methods.beft.adapter import LAYER_TYPES, BiasDelta, create_beft, supports_beft
from deltatune.methods.beft.config import BeftConfig
from deltatune.registry import Method, register_method

register_method(
    Method(
        peft_type=BeftConfig.peft_type,
        config_cls=BeftConfig,
        create=create_beft,  # type: ignore[arg-type]
        supports=supports_beft,
        layer_types=LAYER_TYPES,
    )
)

__all__ = ["BeftConfig", "BiasDelta"]
