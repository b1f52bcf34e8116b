"""PromptAdapter: one prompt-learning adapter of a whole model (kept in DeltaModel.prompt_by_adapter).

It owns the encoder that produces the virtual tokens and answers two questions: the prompt rows
to put before the input embeddings (prompt tuning, P-tuning, multitask), or the KV cache holding
the prefix of every attention layer (prefix tuning). How each task type's inputs are extended
lives in :mod:`deltatune.prompt.inputs`, the KV cache in :mod:`deltatune.prompt.prefix`,
generation in :mod:`deltatune.prompt.generation`, files in :mod:`deltatune.prompt.files`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from deltatune.config import AdapterConfig
from deltatune.errors import ConfigError
from deltatune.prompt import model_info
from deltatune.prompt.config import (
    MultitaskPromptTuningConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptLearningConfig,
    PromptTuningConfig,
)
from deltatune.prompt.encoders import MultitaskPromptTable, PromptTable, build_encoder, init_from_vocab


class PromptAdapter(nn.Module):
    """A prompt-learning adapter on a whole transformers model.

    ``encoder`` is the method's trainable network (see ``encoders.py``), or a :class:`PromptTable`
    of its saved outputs when the adapter was loaded for inference (or without its encoder file).
    """

    def __init__(self, model: nn.Module, config: PromptLearningConfig) -> None:
        super().__init__()
        model_info.fill_config(model, config)
        if config.prompt_kind == "prefix":
            model_info.check_kv_cache(model)
        else:
            model_info.word_embeddings(model)
        self.config = config
        assert config.token_dim is not None and config.num_layers is not None and config.num_virtual_tokens is not None
        n, subs = config.num_virtual_tokens, config.num_transformer_submodules or 1
        self.rows = n if self.is_prefix else n * subs
        self.width = config.token_dim
        self.out_width = config.num_layers * 2 * config.token_dim if self.is_prefix else config.token_dim
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.device(device):
            if config.inference_mode and self.has_network(config):
                self.encoder: nn.Module = PromptTable(self.rows, self.out_width)  # filled by the checkpoint
            else:
                self.encoder = build_encoder(config, self.rows, self.width, self.out_width)
        if not config.inference_mode:
            self._initialise(model)

    @property
    def is_prefix(self) -> bool:
        return self.config.prompt_kind == "prefix"

    @staticmethod
    def has_network(config: PromptLearningConfig) -> bool:
        """Whether the prompt is the output of a network (saved as outputs only in PEFT's file)."""
        return isinstance(config, PromptEncoderConfig) or (
            isinstance(config, PrefixTuningConfig) and config.prefix_projection
        )

    def _initialise(self, model: nn.Module) -> None:
        config = self.config
        if isinstance(config, PromptTuningConfig) and config.prompt_tuning_init in ("TEXT", "SAMPLE_VOCAB"):
            init_from_vocab(self.encoder.embedding, config, model_info.word_embeddings(model))  # type: ignore[arg-type]
        if isinstance(config, MultitaskPromptTuningConfig) and "SOURCE" in config.prompt_tuning_init:
            assert isinstance(self.encoder, MultitaskPromptTable)
            self.encoder.load_source(config)

    # ----------------------------------------------------------------------------- prompts
    def table(self, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """All virtual tokens, fp32: (rows, width), or (batch, rows, width) for multitask prompts."""
        return self.encoder.table(task_ids)  # type: ignore[no-any-return, operator]

    def prompts(self, batch: int, dtype: torch.dtype, task_ids: Any = None) -> torch.Tensor:
        """The virtual-token embeddings for a batch: (batch, rows, token_dim) in ``dtype``."""
        if isinstance(self.encoder, MultitaskPromptTable):
            if task_ids is None:
                raise ConfigError("Multitask prompt tuning needs task_ids: pass task_ids=tensor of task indexes.")
            ids = torch.as_tensor(task_ids).reshape(-1)
            if ids.numel() == 1 and batch > 1:
                ids = ids.expand(batch)
            if ids.numel() != batch:
                raise ConfigError(f"task_ids has {ids.numel()} entries for a batch of {batch}; pass one per sample.")
            return self.table(ids).to(dtype)
        return self.table().unsqueeze(0).expand(batch, -1, -1).to(dtype)

    def prefix_layers(self, batch: int, dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per decoder layer, the prefix keys and values, each (batch, kv_heads, n, head_dim).

        The table's columns hold, per virtual token, ``num_layers * 2`` blocks of (heads, head_dim):
        keys then values of layer 0, then of layer 1, ... (PEFT's layout). For encoder-decoder
        models PEFT lays the blocks out twice and gives decoder layer ``i`` blocks ``4i`` and
        ``4i + 1`` of that doubled list; the same rule is kept so checkpoints mean the same here.
        """
        config = self.config
        assert config.num_layers is not None and config.num_attention_heads is not None
        layers, heads = config.num_layers, config.num_attention_heads
        n = self.rows
        blocks = self.table().view(n, 2 * layers, heads, self.width // heads).permute(1, 2, 0, 3).to(dtype)
        order = list(range(2 * layers))
        if (config.num_transformer_submodules or 1) == 2:
            order, step = order * 2, 4
        else:
            step = 2
        return [
            (blocks[order[step * i]].expand(batch, -1, -1, -1), blocks[order[step * i + 1]].expand(batch, -1, -1, -1))
            for i in range(layers)
        ]

    # ----------------------------------------------------------------------------- model calls
    def run(self, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.is_prefix:
            from deltatune.prompt.prefix import prefix_forward

            return prefix_forward(self, model, args, kwargs)
        from deltatune.prompt.inputs import embedding_forward

        return embedding_forward(self, model, args, kwargs)

    def generate(self, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from deltatune.prompt.generation import generate

        return generate(self, model, args, kwargs)


def create_prompt(model: nn.Module, config: AdapterConfig) -> PromptAdapter:
    """The registry's factory for a whole-model prompt adapter."""
    assert isinstance(config, PromptLearningConfig)
    return PromptAdapter(model, config)
