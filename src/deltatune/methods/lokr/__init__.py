"""LoKr: low-rank Kronecker-product updates on dense and convolution layers."""

from deltatune.methods.lokr.adapter import LokrAdapter, create_lokr, factorize
from deltatune.methods.lokr.config import LoKrConfig
from deltatune.methods.lycoris_common import LAYER_TYPES, supports_lycoris
from deltatune.registry import Method, register_method

register_method(
    Method(
        peft_type=LoKrConfig.peft_type,
        config_cls=LoKrConfig,
        create=create_lokr,  # type: ignore[arg-type]
        supports=supports_lycoris,
        layer_types=LAYER_TYPES,
    )
)

__all__ = ["LoKrConfig", "LokrAdapter", "factorize"]
