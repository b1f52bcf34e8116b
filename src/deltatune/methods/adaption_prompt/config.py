"""AdaptionPromptConfig: PEFT's field names and JSON values (peft_type "ADAPTION_PROMPT")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from deltatune.config import AdapterConfig, _help
from deltatune.errors import ConfigError

# Fields of deltatune's AdapterConfig that PEFT's AdaptionPromptConfig lacks. The method picks its
# layers with adapter_layers, so none of them applies; they are refused when set and not written.
_NOT_IN_PEFT = ("exclude_modules", "modules_to_save", "layers_to_transform", "layers_pattern")


@dataclass
class AdaptionPromptConfig(AdapterConfig):
    """LLaMA-Adapter: learned prompt tokens that the top ``adapter_layers`` attention layers attend to,
    through a zero-initialised gate."""

    peft_type: ClassVar[str] = "ADAPTION_PROMPT"

    target_modules: str | None = _help(  # type: ignore[assignment]
        "Attribute name of the attention module in each decoder layer; None: the model type's ('self_attn', 'attn').",
    )
    adapter_len: int | None = _help("Number of learned prompt tokens per adapted layer, e.g. 10.")
    adapter_layers: int | None = _help("Number of decoder layers, counted from the top, that get a prompt.")

    def __post_init__(self) -> None:
        super().__post_init__()
        target = self.target_modules
        if target is not None and (not isinstance(target, str) or not target or "." in target):
            raise ConfigError(
                f"AdaptionPromptConfig.target_modules must be the attribute name of the attention module "
                f"in each decoder layer, e.g. 'self_attn', got {self.target_modules!r}."
            )
        for name in ("adapter_len", "adapter_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                example = 10 if name == "adapter_len" else 2
                raise ConfigError(
                    f"AdaptionPromptConfig.{name} must be a positive integer (e.g. {example}), got {value!r}."
                )
        for name in _NOT_IN_PEFT:
            if getattr(self, name) not in (None, []):
                raise ConfigError(
                    f"AdaptionPromptConfig does not support {name}: it adapts the attention modules of the "
                    "top adapter_layers decoder layers. Remove it and choose the layers with adapter_layers."
                )

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for key in _NOT_IN_PEFT:
            if out.get(key) in (None, []):
                out.pop(key, None)
        return out
