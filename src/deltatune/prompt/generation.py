"""``generate`` with prompt adapters, through transformers' own generation loop.

- Prompts before the input embeddings: the prompt rows and the input embeddings go in as
  ``inputs_embeds`` (decoder-only models also get ``input_ids``, so the output starts with the
  prompt's real tokens, as without an adapter), with the attention mask extended. The prompt is
  read once, in the prefill step; the KV cache carries it afterwards.
- Prefix tuning: the prefix goes in as the initial KV cache, one row per generated sequence
  (beam search and ``num_return_sequences`` multiply the batch), and the attention mask gets
  ``n`` leading ones. Positions follow the cache, as in the forward pass.
- Left padding: transformers' generate computes position ids from the attention mask, so with the
  ``n`` leading ones (prompt or prefix) each row's real tokens sit at positions ``n, n + 1, ...``
  whatever its padding: a left-padded batch generates, per row, what that row alone would.
- Multitask prompts of encoder-decoder models (two submodules): the second half of the prompt goes
  before the decoder's start token, as in the forward pass. generate takes no decoder embeddings,
  so the decoder reads those prompts in one forward that fills the KV cache, and generate starts
  from the start token with that cache.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.prompt import model_info
from deltatune.prompt.config import MultitaskPromptTuningConfig
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
    all_prompts = adapter.prompts(batch, embeds.dtype, task_ids)
    prompts = all_prompts[:, :n]
    mask = torch.ones(input_ids.shape, dtype=torch.long, device=input_ids.device) if mask is None else mask
    kwargs["inputs_embeds"] = torch.cat((prompts, embeds), dim=1)
    kwargs["attention_mask"] = prepend(mask, n, 1)
    if seq2seq:
        if isinstance(config, MultitaskPromptTuningConfig) and (config.num_transformer_submodules or 1) == 2:
            # (prompt tuning and P-tuning also hold 2n rows here, as in PEFT, but only use the first n)
            return _generate_after_decoder_prompts(model, kwargs, all_prompts[:, n:])
        return model.generate(**kwargs)  # type: ignore[operator]
    return model.generate(input_ids=input_ids, **kwargs)  # type: ignore[operator]


def _generate_after_decoder_prompts(model: nn.Module, kwargs: dict[str, Any], prompts: torch.Tensor) -> Any:
    """Encoder-decoder generate whose decoder first reads ``prompts`` (batch, n, width), then its start token."""
    if kwargs.get("decoder_input_ids") is not None or kwargs.get("encoder_outputs") is not None:
        raise DeltatuneError(
            "generate with multitask decoder prompts builds decoder_input_ids and encoder_outputs itself; "
            "do not pass them."
        )
    batch, n = prompts.shape[:2]
    embeds, mask = kwargs.pop("inputs_embeds"), kwargs["attention_mask"]
    generation_config = kwargs.get("generation_config") or getattr(model, "generation_config", None)
    start = kwargs.pop("decoder_start_token_id", None)
    for source in (generation_config, model_info.model_config(model)):
        start = getattr(source, "decoder_start_token_id", None) if start is None else start
    if start is None:
        raise DeltatuneError("The model has no decoder_start_token_id; pass decoder_start_token_id= to generate.")
    with torch.no_grad():
        encoder_outputs = model.get_encoder()(inputs_embeds=embeds, attention_mask=mask, return_dict=True)  # type: ignore[operator]
        out = model(encoder_outputs=encoder_outputs, attention_mask=mask, decoder_inputs_embeds=prompts, use_cache=True)
    cache = out["cache"] if "cache" in out else out["past_key_values"]
    if _expansion(model, kwargs) > 1:  # generate expands the inputs it is given, not a cache
        cache.batch_repeat_interleave(_expansion(model, kwargs))
    backbone = model_info.kv_backbone(model)
    name = "cache" if backbone is not None and model_info.cache_argument(backbone) == "cache" else "past_key_values"
    kwargs[name] = cache
    kwargs["decoder_input_ids"] = torch.full((batch, 1), int(start), dtype=torch.long, device=embeds.device)
    kwargs["decoder_attention_mask"] = torch.ones(batch, n + 1, dtype=torch.long, device=embeds.device)
    return model.generate(encoder_outputs=encoder_outputs, **kwargs)  # type: ignore[operator]
