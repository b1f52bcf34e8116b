"""``generate`` with prompt adapters, through transformers' own generation loop.

- Prompts before the input embeddings: the prompt rows and the input embeddings go in as
  ``inputs_embeds`` (decoder-only models also get ``input_ids``, so the output starts with the
  prompt's real tokens, as without an adapter), with the attention mask extended. The prompt is
  read once, in the prefill step; the KV cache carries it afterwards.
- Prefix tuning: the prefix goes in as the initial KV cache, one row per generated sequence
  (beam search and ``num_return_sequences`` multiply the batch), and the attention mask gets
  ``n`` leading ones. Positions follow the cache, as in the forward pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.prompt import model_info
from deltatune.prompt.inputs import prepend
from deltatune.prompt.prefix import prefix_cache

if TYPE_CHECKING:
    from deltatune.prompt.adapter import PromptAdapter


def _expansion(model: nn.Module, kwargs: dict[str, Any]) -> int:
    """How many sequences generate runs per input row (beams, or returned samples)."""
    config = kwargs.get("generation_config") or getattr(model, "generation_config", None)

    def value(name: str) -> int:
        found = kwargs.get(name, getattr(config, name, None))
        return int(found) if found is not None else 1

    beams = value("num_beams")
    return beams if beams > 1 else value("num_return_sequences")


def generate(adapter: PromptAdapter, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    kwargs = dict(kwargs)
    if args:
        if "input_ids" in kwargs or len(args) > 1:
            raise DeltatuneError("Pass generate's inputs by keyword (input_ids=..., attention_mask=...).")
        kwargs["input_ids"] = args[0]
    input_ids = kwargs.pop("input_ids", None)
    if not isinstance(input_ids, torch.Tensor):
        raise DeltatuneError("generate with a prompt adapter needs input_ids.")
    task_ids = kwargs.pop("task_ids", None)
    config = adapter.config
    n = int(config.num_virtual_tokens or 0)
    batch = input_ids.shape[0]
    seq2seq = bool(getattr(model_info.model_config(model), "is_encoder_decoder", False))
    mask = kwargs.pop("attention_mask", None)
    if adapter.is_prefix:
        backbone = model_info.kv_backbone(model)
        assert backbone is not None
        name = "cache" if model_info.cache_argument(backbone) == "cache" else "past_key_values"
        kwargs[name] = prefix_cache(adapter, model, batch * _expansion(model, kwargs))
        if seq2seq:
            if kwargs.get("decoder_attention_mask") is not None:
                kwargs["decoder_attention_mask"] = prepend(kwargs["decoder_attention_mask"], n, 1)
            return model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)  # type: ignore[operator]
        mask = torch.ones_like(input_ids) if mask is None else mask
        return model.generate(input_ids=input_ids, attention_mask=prepend(mask, n, 1), **kwargs)  # type: ignore[operator]
    embeds = model_info.word_embeddings(model)(input_ids)
    prompts = adapter.prompts(batch, embeds.dtype, task_ids)[:, :n]
    mask = torch.ones(input_ids.shape, dtype=torch.long, device=input_ids.device) if mask is None else mask
    kwargs["inputs_embeds"] = torch.cat((prompts, embeds), dim=1)
    kwargs["attention_mask"] = prepend(mask, n, 1)
    if seq2seq:
        return model.generate(**kwargs)  # type: ignore[operator]
    return model.generate(input_ids=input_ids, **kwargs)  # type: ignore[operator]
