"""AdaLoRA: SVD-form low-rank updates whose ranks are pruned to a budget during training."""

from deltatune.methods.adalora import allocator
from deltatune.methods.adalora.adapter import SvdAdapter, SvdConv2d, SvdLinear, create_adalora, supports_adalora
from deltatune.methods.adalora.config import AdaLoraConfig
from deltatune.registry import Method, register_method

register_method(
    Method(
        peft_type=AdaLoraConfig.peft_type,
        config_cls=AdaLoraConfig,
        create=create_adalora,  # type: ignore[arg-type]
        supports=supports_adalora,
        layer_types=("Linear", "Conv2d", "GPT-2 Conv1D"),
        on_optimizer_step=allocator.on_optimizer_step,
        training_loss=allocator.orthogonality_loss,
        checkpoint_tensors=allocator.checkpoint_tensors,
    )
)

__all__ = ["AdaLoraConfig", "SvdAdapter", "SvdConv2d", "SvdLinear"]
