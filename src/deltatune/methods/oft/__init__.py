"""OFT: block-diagonal orthogonal rotations of the weight, trained through the Cayley transform."""

from deltatune.methods.oft.adapter import OftAdapter, OftConv, OftEmbedding, OftLinear, create_oft, supports_oft
from deltatune.methods.oft.config import OFTConfig
from deltatune.registry import Method, register_method

register_method(
    Method(
        peft_type=OFTConfig.peft_type,
        config_cls=OFTConfig,
        create=create_oft,  # type: ignore[arg-type]
        supports=supports_oft,
        layer_types=("Linear", "GPT-2 Conv1D", "Embedding", "Conv1d", "Conv2d", "Conv3d"),
    )
)

__all__ = ["OFTConfig", "OftAdapter", "OftConv", "OftEmbedding", "OftLinear"]
