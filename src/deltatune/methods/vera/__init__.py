"""VeRA: per-layer scaling vectors on random projections shared by all layers of an adapter."""

from deltatune.methods.vera.adapter import (
    VeraLinear,
    VeraProjections,
    create_vera,
    create_vera_projections,
    supports_vera,
)
from deltatune.methods.vera.config import VeraConfig
from deltatune.registry import Method, register_method

register_method(
    Method(
        peft_type=VeraConfig.peft_type,
        config_cls=VeraConfig,
        create=create_vera,
        supports=supports_vera,
        layer_types=("Linear", "GPT-2 Conv1D"),
        create_shared=create_vera_projections,
    )
)

__all__ = ["VeraConfig", "VeraLinear", "VeraProjections"]
