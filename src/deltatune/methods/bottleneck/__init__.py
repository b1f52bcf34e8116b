"""Bottleneck adapters (Houlsby / Pfeiffer / parallel): a deltatune method, not in PEFT."""

from deltatune.methods.bottleneck.adapter import LAYER_TYPES, BottleneckAdapter, create_bottleneck, supports_bottleneck
from deltatune.methods.bottleneck.config import BottleneckConfig
from deltatune.registry import Method, register_method

register_method(
    Method(
        peft_type=BottleneckConfig.peft_type,
        config_cls=BottleneckConfig,
        create=create_bottleneck,  # type: ignore[arg-type]
        supports=supports_bottleneck,
        layer_types=LAYER_TYPES,
    )
)

__all__ = ["BottleneckAdapter", "BottleneckConfig"]
