"""BOFT: orthogonal finetuning with butterfly-factorised rotations and a per-output scale."""

from deltatune.methods.boft.adapter import BoftAdapter, BoftConv, BoftLinear, create_boft, supports_boft
from deltatune.methods.boft.config import BOFTConfig
from deltatune.registry import Method, register_method

register_method(
    Method(
        peft_type=BOFTConfig.peft_type,
        config_cls=BOFTConfig,
        create=create_boft,  # type: ignore[arg-type]
        supports=supports_boft,
        layer_types=("Linear", "GPT-2 Conv1D", "Conv1d", "Conv2d", "Conv3d"),
    )
)

__all__ = ["BOFTConfig", "BoftAdapter", "BoftConv", "BoftLinear"]
