"""HRA: a chain of trained Householder reflections multiplying the weight from the right."""

from deltatune.methods.hra.adapter import HRAAdapter, HRAConv2d, HRALinear, create_hra, supports_hra
from deltatune.methods.hra.config import HRAConfig
from deltatune.registry import Method, register_method

register_method(
    Method(
        peft_type=HRAConfig.peft_type,
        config_cls=HRAConfig,
        create=create_hra,
        supports=supports_hra,
        layer_types=("Linear", "Conv2d"),
    )
)

__all__ = ["HRAAdapter", "HRAConfig", "HRAConv2d", "HRALinear"]
