"""LoRA: low-rank updates on dense, embedding and convolution layers."""

from deltatune.methods.lora.adapter import LoraAdapter, LoraConv, LoraEmbedding, LoraLinear, create_lora, supports_lora
from deltatune.methods.lora.config import LoraConfig
from deltatune.methods.lora.init import check_targets
from deltatune.registry import Method, register_method

register_method(
    Method(
        peft_type=LoraConfig.peft_type,
        config_cls=LoraConfig,
        create=create_lora,  # type: ignore[arg-type]
        supports=supports_lora,
        layer_types=("Linear", "Embedding", "Conv1d", "Conv2d", "Conv3d", "GPT-2 Conv1D", "MultiheadAttention"),
        # Shares nothing (returns None): it checks every target before PiSSA/OLoRA rewrite any base weight.
        create_shared=check_targets,  # type: ignore[arg-type]
    )
)

__all__ = ["LoraAdapter", "LoraConfig", "LoraConv", "LoraEmbedding", "LoraLinear"]
