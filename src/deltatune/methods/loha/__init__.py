"""LoHa: low-rank Hadamard-product updates on dense and convolution layers."""

from deltatune.methods.loha.adapter import LohaAdapter, create_loha
from deltatune.methods.loha.config import LoHaConfig
from deltatune.methods.lycoris_common import LAYER_TYPES, supports_lycoris
from deltatune.registry import Method, register_method

register_method(
    Method(
        peft_type=LoHaConfig.peft_type,
        config_cls=LoHaConfig,
        create=create_loha,  # type: ignore[arg-type]
        supports=supports_lycoris,
        layer_types=LAYER_TYPES,
    )
)

__all__ = ["LoHaConfig", "LohaAdapter"]
