"""LLaMA-Adapter's adaption prompt: gated prompt tokens in the top attention layers (PEFT's ADAPTION_PROMPT)."""

from deltatune.methods.adaption_prompt.adapter import (
    LAYER_TYPES,
    AdaptionPromptAdapter,
    GPT2AdaptionPrompt,
    LlamaAdaptionPrompt,
    create_adaption_prompt,
    select_targets,
    supports_adaption_prompt,
)
from deltatune.methods.adaption_prompt.config import AdaptionPromptConfig
from deltatune.registry import Method, register_method

register_method(
    Method(
        peft_type=AdaptionPromptConfig.peft_type,
        config_cls=AdaptionPromptConfig,
        create=create_adaption_prompt,  # type: ignore[arg-type]
        supports=supports_adaption_prompt,
        layer_types=LAYER_TYPES,
        select_targets=select_targets,  # type: ignore[arg-type]
    )
)

__all__ = ["AdaptionPromptAdapter", "AdaptionPromptConfig", "GPT2AdaptionPrompt", "LlamaAdaptionPrompt"]
