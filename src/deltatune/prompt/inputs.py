"""Task-type input handling for prompts placed before the input embeddings.

The ``n`` virtual tokens become the first ``n`` positions of the sequence, so everything aligned
with the sequence is extended for them: the attention mask (ones), token type ids (zeros),
position ids (``0..n-1``, then the given ones shifted by ``n``), token labels (``-100``: no loss
on virtual tokens) and extractive-QA start/end positions (shifted by ``n``). For encoder-decoder
models (SEQ_2_SEQ_LM) the prompt goes before the encoder input; multitask prompts with two
submodules also put their second half before the decoder input.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.prompt import model_info
from deltatune.prompt.config import MultitaskPromptTuningConfig

if TYPE_CHECKING:
    from deltatune.prompt.adapter import PromptAdapter

IGNORE_INDEX = -100


def bind_inputs(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Positional arguments of ``model.forward`` as keywords, so inputs can be edited by name."""
    kwargs = dict(kwargs)
    if args:
        names = [p for p in inspect.signature(model.forward).parameters if p not in ("self",)]
        for name, value in zip(names, args, strict=False):
            if name in kwargs:
                raise DeltatuneError(f"{name} was given both positionally and by keyword.")
            kwargs[name] = value
    return kwargs


def batch_size(kwargs: dict[str, Any]) -> int:
    for key in ("input_ids", "inputs_embeds"):
        value = kwargs.get(key)
        if isinstance(value, torch.Tensor):
            return int(value.shape[0])
    raise DeltatuneError("Prompt methods need input_ids or inputs_embeds to know the batch.")


def prepend(value: torch.Tensor | None, n: int, fill: float) -> torch.Tensor | None:
    """``value`` (batch, length, ...) with ``n`` positions of ``fill`` in front, or None."""
    if value is None:
        return None
    front = torch.full((value.shape[0], n, *value.shape[2:]), fill, dtype=value.dtype, device=value.device)
    return torch.cat((front, value), dim=1)


def extend_positions(position_ids: torch.Tensor | None, n: int) -> torch.Tensor | None:
    if position_ids is None:
        return None
    front = torch.arange(n, dtype=position_ids.dtype, device=position_ids.device).expand(*position_ids.shape[:-1], n)
    return torch.cat((front, position_ids + n), dim=-1)


def embedding_forward(adapter: PromptAdapter, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run ``model`` with the adapter's virtual tokens before the input embeddings."""
    config = adapter.config
    kwargs = bind_inputs(model, args, kwargs)
    task_ids = kwargs.pop("task_ids", None)
    batch = batch_size(kwargs)
    n = int(config.num_virtual_tokens or 0)
    input_ids = kwargs.pop("input_ids", None)
    embeds = kwargs.pop("inputs_embeds", None)
    if embeds is None:
        embeds = model_info.word_embeddings(model)(input_ids)
    prompts = adapter.prompts(batch, embeds.dtype, task_ids)
    kwargs["inputs_embeds"] = torch.cat((prompts[:, :n], embeds), dim=1)
    kwargs["attention_mask"] = prepend(kwargs.get("attention_mask"), n, 1)
    if config.task_type == "SEQ_2_SEQ_LM":
        if prompts.shape[1] > n and isinstance(config, MultitaskPromptTuningConfig):
            _decoder_prompts(model, kwargs, prompts[:, n:])
        return model(**kwargs)
    kwargs["token_type_ids"] = prepend(kwargs.get("token_type_ids"), n, 0)
    kwargs["position_ids"] = extend_positions(kwargs.get("position_ids"), n)
    if config.task_type in ("CAUSAL_LM", "TOKEN_CLS") or config.task_type is None:
        kwargs["labels"] = prepend(kwargs.get("labels"), n, IGNORE_INDEX)
    if config.task_type == "QUESTION_ANS":
        for key in ("start_positions", "end_positions"):
            if kwargs.get(key) is not None:
                kwargs[key] = kwargs[key] + n
    return model(**{k: v for k, v in kwargs.items() if v is not None or k not in _DROP_IF_NONE})


# Keys added above as None when absent: not passed on, since some models do not take them.
_DROP_IF_NONE = {"attention_mask", "token_type_ids", "position_ids", "labels"}


def _decoder_prompts(model: nn.Module, kwargs: dict[str, Any], prompts: torch.Tensor) -> None:
    """Multitask prompts of an encoder-decoder model: the second half goes before the decoder input."""
    n = prompts.shape[1]
    decoder_embeds = kwargs.pop("decoder_inputs_embeds", None)
    if decoder_embeds is None:
        decoder_ids = kwargs.pop("decoder_input_ids", None)
        if decoder_ids is None:
            labels = kwargs.get("labels")
            if labels is None:
                raise DeltatuneError("Pass decoder_input_ids (or labels) to an encoder-decoder model with prompts.")
            decoder_ids = _shift_right(labels, model_info.model_config(model))
        decoder_embeds = model_info.word_embeddings(model)(decoder_ids)
    kwargs["decoder_inputs_embeds"] = torch.cat((prompts.to(decoder_embeds.dtype), decoder_embeds), dim=1)
    kwargs["decoder_attention_mask"] = prepend(kwargs.get("decoder_attention_mask"), n, 1)
    kwargs["labels"] = prepend(kwargs.get("labels"), n, IGNORE_INDEX)
    if kwargs["decoder_attention_mask"] is None:
        del kwargs["decoder_attention_mask"]
    if kwargs["labels"] is None:
        del kwargs["labels"]


def _shift_right(labels: torch.Tensor, config: Any) -> torch.Tensor:
    """Decoder inputs from labels: the start token, then the labels without the last one (-100 -> pad)."""
    shifted = labels.new_full(labels.shape, int(config.decoder_start_token_id or 0))
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == IGNORE_INDEX, int(config.pad_token_id or 0))
