"""The KV-cache prefix of prefix tuning, in transformers' own cache objects.

The prefix is handed to the model as a ``DynamicCache`` already holding ``n`` positions per layer
(an ``EncoderDecoderCache`` whose self-attention part holds them, for encoder-decoder models), so
the model's attention, masks and positions treat it as past tokens: the attention mask gets ``n``
leading ones and given position ids are shifted by ``n``.

Under gradient checkpointing, transformers drops a cache that layers write to (the backward replay
would write it twice). The prefix is then given as a read-only cache (each layer returns
``[prefix; new]`` without storing it) and the layers are told it is safe to keep, so gradients are
the same with and without checkpointing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from deltatune.prompt import model_info
from deltatune.prompt.inputs import batch_size, bind_inputs, prepend

if TYPE_CHECKING:
    from deltatune.prompt.adapter import PromptAdapter


def _read_only_layer_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class ReadOnlyPrefixLayer(DynamicLayer):  # type: ignore[misc]
        """A cache layer that always answers ``[prefix; new]`` and never grows."""

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            prefix_keys, prefix_values = cast(torch.Tensor, self.keys), cast(torch.Tensor, self.values)
            keys = torch.cat([prefix_keys, key_states.to(prefix_keys.dtype)], dim=-2)
            return keys, torch.cat([prefix_values, value_states.to(prefix_values.dtype)], dim=-2)

    return ReadOnlyPrefixLayer


def prefix_cache(adapter: PromptAdapter, model: nn.Module, batch: int, read_only: bool = False) -> Any:
    """A transformers cache holding the adapter's prefix for ``batch`` sequences."""
    from transformers import DynamicCache, EncoderDecoderCache

    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    layers = adapter.prefix_layers(batch, dtype)
    cache = DynamicCache(layers)
    if read_only:
        layer_cls = _read_only_layer_class()
        for layer in cache.layers:
            layer.__class__ = layer_cls
    if adapter.config.task_type == "SEQ_2_SEQ_LM" or getattr(
        model_info.model_config(model), "is_encoder_decoder", False
    ):
        both = EncoderDecoderCache(cache, DynamicCache())
        for key in list(getattr(both, "is_updated", {})):
            both.is_updated[key] = False
        return both
    return cache


def checkpointing(model: nn.Module) -> bool:
    return (
        model.training
        and torch.is_grad_enabled()
        and any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())
    )


@contextlib.contextmanager
def keep_cache_under_checkpointing(model: nn.Module) -> Iterator[None]:
    """Let checkpointed layers keep the (read-only) prefix cache for this forward."""
    layers = [m for m in model.modules() if hasattr(type(m), "_can_checkpoint_with_cache")]
    for layer in layers:
        setattr(layer, "_can_checkpoint_with_cache", True)  # noqa: B010  (an instance flag over the class's)
    try:
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("_can_checkpoint_with_cache", None)


def prefix_forward(adapter: PromptAdapter, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run ``model`` with the prefix in every attention layer's keys and values."""
    kwargs = bind_inputs(model, args, kwargs)
    kwargs.pop("task_ids", None)
    n = int(adapter.config.num_virtual_tokens or 0)
    batch = batch_size(kwargs)
    seq2seq = adapter.config.task_type == "SEQ_2_SEQ_LM"
    mask_key = "decoder_attention_mask" if seq2seq else "attention_mask"
    if kwargs.get(mask_key) is not None:
        kwargs[mask_key] = prepend(kwargs[mask_key], n, 1)
    position_key = "decoder_position_ids" if seq2seq else "position_ids"
    if kwargs.get(position_key) is not None:
        kwargs[position_key] = kwargs[position_key] + n
    read_only = checkpointing(model)
    backbone = model_info.kv_backbone(model)
    assert backbone is not None
    kwargs[model_info.cache_argument(backbone) or "cache"] = prefix_cache(adapter, model, batch, read_only)
    if not read_only:
        return model(**kwargs)
    with keep_cache_under_checkpointing(model):
        return model(**kwargs)
