"""What a prompt method needs to know about the model: its shape fields, embeddings and KV-cache interface.

The shape fields PEFT derives (token_dim, num_layers, num_attention_heads,
num_transformer_submodules; for prefix tuning with grouped-query attention the KV width) are
read from the transformers config under its various names (Llama, GPT-2, T5, BART, BERT).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from deltatune.errors import ConfigError
from deltatune.prompt.config import PromptLearningConfig

_LAYERS = ("num_hidden_layers", "num_layers", "n_layer")
_WIDTH = ("hidden_size", "n_embd", "d_model")
_HEADS = ("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads")
_POSITIONS = ("max_position_embeddings", "n_positions")


def model_config(model: nn.Module) -> Any:
    """The transformers config of ``model`` (its text part for multimodal models), or a clear error."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict") or not hasattr(model, "get_input_embeddings"):
        raise ConfigError(
            f"Prompt methods need a transformers model (with .config and get_input_embeddings()); got "
            f"{type(model).__name__}. Load the model with transformers (e.g. AutoModelForCausalLM), or use an "
            "injected method such as LoraConfig for plain torch modules."
        )
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def _first(config: Any, names: tuple[str, ...]) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None


def fill_config(model: nn.Module, config: PromptLearningConfig) -> None:
    """Fill the model-shape fields left None, as PEFT does, and check the prompt fits the model."""
    hf = model_config(model)
    if config.num_transformer_submodules is None:
        config.num_transformer_submodules = 2 if config.task_type == "SEQ_2_SEQ_LM" else 1
    for field, names in (("num_layers", _LAYERS), ("token_dim", _WIDTH), ("num_attention_heads", _HEADS)):
        if getattr(config, field) is None:
            value = _first(hf, names)
            if value is None:
                raise ConfigError(
                    f"Cannot read {field} from the model's config ({type(hf).__name__}); set {field}= in the config."
                )
            setattr(config, field, int(value))
    if config.prompt_kind == "prefix":
        kv_heads = getattr(hf, "num_key_value_heads", None)
        if kv_heads is not None and config.token_dim == _first(hf, _WIDTH):
            # Grouped-query attention: the prefix holds keys/values of the KV heads only.
            assert config.token_dim is not None and config.num_attention_heads is not None
            head_dim = getattr(hf, "head_dim", None) or config.token_dim // config.num_attention_heads
            config.token_dim = int(head_dim) * int(kv_heads)
            config.num_attention_heads = int(kv_heads)
        if getattr(config, "encoder_hidden_size", None) is None:
            config.encoder_hidden_size = config.token_dim  # type: ignore[attr-defined]
        assert config.token_dim is not None and config.num_attention_heads is not None
        if config.token_dim % config.num_attention_heads:
            raise ConfigError(
                f"token_dim={config.token_dim} is not a multiple of num_attention_heads={config.num_attention_heads}."
            )
    _check_fits(model, hf, config)
    positions = _first(hf, _POSITIONS)
    if config.task_type != "SEQ_2_SEQ_LM" and isinstance(positions, int):
        assert config.num_virtual_tokens is not None
        if config.num_virtual_tokens >= positions:
            raise ConfigError(
                f"num_virtual_tokens={config.num_virtual_tokens} leaves no room for input tokens: the model has "
                f"max_position_embeddings={positions}. Use fewer virtual tokens (e.g. {max(1, positions // 4)})."
            )


def word_embeddings(model: nn.Module) -> nn.Module:
    embedding = model.get_input_embeddings()  # type: ignore[operator]
    if not isinstance(embedding, nn.Module):
        raise ConfigError(f"{type(model).__name__}.get_input_embeddings() returned no module; prompts need it.")
    return embedding


def cache_argument(module: nn.Module) -> str | None:
    """The keyword under which ``module.forward`` takes a KV cache (``cache`` or ``past_key_values``), or None."""
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return None
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    return None


def kv_backbone(model: nn.Module) -> nn.Module | None:
    """The module that takes the KV cache: the model itself, or its transformers backbone (BERT's ``bert``)."""
    if cache_argument(model) is not None:
        return model
    backbone = getattr(model, "base_model", None)
    if not isinstance(backbone, nn.Module) or backbone is model or cache_argument(backbone) is None:
        return None
    try:  # a task head (e.g. BERT's classifier model) passes extra keywords on to its backbone
        passes_on = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    return backbone if passes_on else None


def check_kv_cache(model: nn.Module) -> None:
    if kv_backbone(model) is None:
        raise ConfigError(
            f"Prefix tuning needs a model that accepts a KV cache (a `cache` / `past_key_values` argument); "
            f"{type(model).__name__} has none. Use prompt tuning (PromptTuningConfig) or P-tuning instead."
        )


def _check_fits(model: nn.Module, hf: Any, config: PromptLearningConfig) -> None:
    """A config filled for another model (e.g. from a checkpoint) must fail here, not deep in a matmul."""
    if config.prompt_kind == "prefix":
        layers, heads = _first(hf, _LAYERS), _first(hf, _HEADS)
        kv_heads = getattr(hf, "num_key_value_heads", None) or heads
        head_dim = getattr(hf, "head_dim", None) or (_first(hf, _WIDTH) // heads if heads else None)
        if hasattr(hf, "d_kv"):  # T5: the attention width is heads * d_kv, not d_model
            head_dim = hf.d_kv
        expected: tuple[Any, ...] = (layers, int(head_dim) * int(kv_heads) if head_dim and kv_heads else None)
        found: tuple[Any, ...] = (config.num_layers, config.token_dim)
        what = "(num_layers, token_dim = KV heads x head dim)"
    else:
        weight = getattr(word_embeddings(model), "weight", None)
        expected = (weight.shape[1] if isinstance(weight, torch.Tensor) else None,)
        found = (config.token_dim,)
        what = "(token_dim = hidden size)"
    if None not in expected and tuple(expected) != tuple(found):
        raise ConfigError(
            f"This {config.peft_type} adapter was made for a model with {what} = {found}, but this model has "
            f"{tuple(expected)}. Load the adapter on the model it was trained for, or leave these fields unset."
        )
