"""(IA)³: learned rescaling vectors on dense and convolution layers."""

from deltatune.methods.ia3.adapter import LAYER_TYPES, IA3Adapter, create_ia3, supports_ia3
from deltatune.methods.ia3.config import IA3Config
from deltatune.registry import Method, register_method

register_method(
    Method(
        peft_type=IA3Config.peft_type,
        config_cls=IA3Config,
        create=create_ia3,  # type: ignore[arg-type]
        supports=supports_ia3,
        layer_types=LAYER_TYPES,
    )
)

__all__ = ["IA3Adapter", "IA3Config"]
