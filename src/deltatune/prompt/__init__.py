"""Prompt learning: prompt tuning, P-tuning, prefix tuning and multitask prompt tuning.

These methods edit the model's inputs (virtual tokens before the input embeddings) or its KV
cache (a prefix in every attention layer) instead of adapting layers, so they plug into the
registry with ``Method.create_prompt`` (a whole-model adapter) and no per-layer factory.
"""

from torch import nn

from deltatune.config import AdapterConfig
from deltatune.errors import UnsupportedLayerError
from deltatune.layer import Adapter
from deltatune.prompt.adapter import PromptAdapter, create_prompt
from deltatune.prompt.config import (
    MultitaskPromptTuningConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptLearningConfig,
    PromptTuningConfig,
)
from deltatune.registry import Method, register_method


def _no_layers(base: nn.Module, module_name: str, config: AdapterConfig) -> Adapter:
    raise UnsupportedLayerError(
        f"{type(config).__name__} adapts no layer (asked for {module_name!r}, a {type(base).__name__}); "
        "it adds virtual tokens to the whole model: use dt.wrap(model, config)."
    )


def _supports_no_layer(module: nn.Module) -> bool:
    return False


for _config_cls in (PromptTuningConfig, PromptEncoderConfig, PrefixTuningConfig, MultitaskPromptTuningConfig):
    register_method(
        Method(
            peft_type=_config_cls.peft_type,
            config_cls=_config_cls,
            create=_no_layers,
            supports=_supports_no_layer,
            layer_types=(),
            create_prompt=create_prompt,
        )
    )

__all__ = [
    "MultitaskPromptTuningConfig",
    "PrefixTuningConfig",
    "PromptAdapter",
    "PromptEncoderConfig",
    "PromptLearningConfig",
    "PromptTuningConfig",
]
