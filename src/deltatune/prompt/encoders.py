"""The networks that produce the virtual tokens of each prompt-learning method.

Every encoder answers ``table(task_ids)``: all its virtual tokens at once, ``(rows, width)``
(multitask prompt tuning: ``(batch, rows, width)``, one prompt per task id). The caller expands
the table over the batch, so the encoder runs once per forward whatever the batch size.
Parameter names follow PEFT's prompt encoders (``embedding.weight``, ``mlp_head.0.weight``, ...).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from deltatune.errors import ConfigError
from deltatune.prompt.config import (
    MultitaskPromptTuningConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptLearningConfig,
    PromptTuningConfig,
)


class PromptTable(nn.Module):
    """Prompt tuning (Lester et al., 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning").

    The virtual tokens are free parameters ``P`` (rows, width) placed before the input embeddings:
    ``h0 = [P; E(x)]``. Also holds the saved outputs of an encoder (P-tuning, prefix projection)
    when only those outputs are loaded.
    """

    def __init__(self, rows: int, width: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(rows, width)

    def table(self, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.embedding.weight


class PTuningEncoder(nn.Module):
    """P-tuning (Liu et al., 2021, "GPT Understands, Too").

    Input vectors ``e`` (rows, width) pass through an encoder: MLP ``P = W3 relu(W2 relu(W1 e))``
    (hidden ``encoder_hidden_size``), or a bidirectional LSTM followed by a 2-layer MLP; the
    output ``P`` (rows, width) is prepended to the input embeddings as in prompt tuning.
    """

    def __init__(self, config: PromptEncoderConfig, rows: int, width: int) -> None:
        super().__init__()
        hidden = config.encoder_hidden_size or width
        self.kind = config.encoder_reparameterization_type
        self.embedding = nn.Embedding(rows, width)
        if self.kind == "LSTM":
            self.lstm_head = nn.LSTM(
                input_size=width,
                hidden_size=hidden,
                num_layers=config.encoder_num_layers,
                dropout=config.encoder_dropout,
                bidirectional=True,
                batch_first=True,
            )
            self.mlp_head = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, width))
        else:
            self.mlp_head = nn.Sequential(
                nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, width)
            )

    def table(self, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        inputs = self.embedding.weight.unsqueeze(0)  # (1, rows, width): the LSTM reads the tokens as a sequence
        if self.kind == "LSTM":
            inputs = self.lstm_head(inputs)[0]
        return self.mlp_head(inputs)[0]


class PrefixEncoder(nn.Module):
    """Prefix tuning (Li & Liang, 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation").

    Each attention layer ``l`` attends to ``n`` extra keys/values: ``K_l = [P^K_l; W_K h]``,
    ``V_l = [P^V_l; W_V h]``. The prefix is one table (n, layers * 2 * kv_width), either free
    parameters or, with ``prefix_projection``, ``tanh``-MLP(e) of (n, token_dim) inputs.
    """

    def __init__(self, config: PrefixTuningConfig, rows: int, width: int, out_width: int) -> None:
        super().__init__()
        self.projected = config.prefix_projection
        if self.projected:
            hidden = config.encoder_hidden_size or width
            self.embedding = nn.Embedding(rows, width)
            self.transform = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, out_width))
            last = self.transform[-1]
            assert isinstance(last, nn.Linear)
            if config.init_weights == "zero":
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)
        else:
            self.embedding = nn.Embedding(rows, out_width)
            if config.init_weights == "zero":
                nn.init.zeros_(self.embedding.weight)

    def table(self, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.projected:
            return self.transform(self.embedding.weight.unsqueeze(0))[0]
        return self.embedding.weight


class MultitaskPromptTable(nn.Module):
    """Multitask prompt tuning (Wang et al., 2023, "Multitask Prompt Tuning Enables Parameter-Efficient
    Transfer Learning").

    Task ``t`` uses ``P_t = P * (C_t R_t)`` (elementwise): a shared prompt ``P`` (rows, width)
    times a rank-``r`` task matrix, ``C`` (tasks, rows, r) = ``prefix_task_cols``,
    ``R`` (tasks, r, width) = ``prefix_task_rows``.
    """

    def __init__(self, config: MultitaskPromptTuningConfig, rows: int, width: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(rows, width)
        self.prefix_task_cols = nn.Parameter(torch.normal(0.0, 0.02, size=(config.num_tasks, rows, config.num_ranks)))
        self.prefix_task_rows = nn.Parameter(torch.normal(0.0, 0.02, size=(config.num_tasks, config.num_ranks, width)))

    def table(self, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        if task_ids is None:
            raise ConfigError(
                "Multitask prompt tuning needs task_ids: pass model(..., task_ids=tensor of task indexes)."
            )
        task_ids = task_ids.to(self.prefix_task_cols.device).long().reshape(-1)
        if task_ids.numel() and (int(task_ids.min()) < 0 or int(task_ids.max()) >= self.prefix_task_cols.shape[0]):
            raise ConfigError(f"task_ids must lie in [0, {self.prefix_task_cols.shape[0]}), got {task_ids.tolist()}.")
        task = torch.matmul(self.prefix_task_cols[task_ids], self.prefix_task_rows[task_ids])
        return self.embedding.weight.unsqueeze(0) * task

    def load_source(self, config: MultitaskPromptTuningConfig) -> None:
        """The *_SOURCE_* inits: start from a multitask checkpoint trained on source tasks."""
        from deltatune.prompt.files import read_file

        path = config.prompt_tuning_init_state_dict_path
        assert path is not None
        state = read_file(path)
        with torch.no_grad():
            self.embedding.weight.copy_(state["prompt_embeddings"])
            if config.prompt_tuning_init == "ONLY_SOURCE_SHARED":
                return
            cols, rows = state["prefix_task_cols"], state["prefix_task_rows"]
            if config.prompt_tuning_init == "AVERAGE_SOURCE_TASKS":
                cols, rows = cols.mean(0, keepdim=True), rows.mean(0, keepdim=True)
            else:
                cols = cols[config.prompt_tuning_init_task].unsqueeze(0)
                rows = rows[config.prompt_tuning_init_task].unsqueeze(0)
            if cols.shape != self.prefix_task_cols.shape or rows.shape != self.prefix_task_rows.shape:
                raise ConfigError(
                    f"The source checkpoint gives task matrices of shapes {tuple(cols.shape)} / {tuple(rows.shape)}, "
                    f"the config expects {tuple(self.prefix_task_cols.shape)} / {tuple(self.prefix_task_rows.shape)}; "
                    "set num_tasks=1 and the source's num_ranks for these inits."
                )
            self.prefix_task_cols.copy_(cols)
            self.prefix_task_rows.copy_(rows)


def init_from_vocab(table: nn.Embedding, config: PromptTuningConfig, word_embeddings: nn.Module) -> None:
    """TEXT / SAMPLE_VOCAB inits: copy rows of the model's word embeddings into the prompt."""
    rows = table.weight.shape[0]
    weight = getattr(word_embeddings, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise ConfigError(f"{config.prompt_tuning_init} init needs the model's word embedding matrix; none was found.")
    if config.prompt_tuning_init == "SAMPLE_VOCAB":
        ids = torch.randint(0, weight.shape[0], (rows,), dtype=torch.long)
    else:
        ids = torch.tensor(_text_ids(config, rows), dtype=torch.long)
        if int(ids.max()) >= weight.shape[0]:
            raise ConfigError(
                f"The tokenizer {config.tokenizer_name_or_path!r} gives token id {int(ids.max())}, beyond the model's "
                f"{weight.shape[0]} embeddings; use the base model's own tokenizer."
            )
    with torch.no_grad():
        table.weight.copy_(weight.detach()[ids.to(weight.device)].to(table.weight))


def _text_ids(config: PromptTuningConfig, rows: int) -> list[int]:
    from transformers import AutoTokenizer

    kwargs = dict(config.tokenizer_kwargs or {})
    kwargs.pop("trust_remote_code", None)  # never run code from a config file
    try:
        tokenizer = AutoTokenizer.from_pretrained(config.tokenizer_name_or_path, **kwargs)
    except Exception as exc:
        raise ConfigError(
            f"Could not load the tokenizer {config.tokenizer_name_or_path!r} for the TEXT init ({exc}); "
            "set tokenizer_name_or_path to a local tokenizer folder or a reachable Hub id."
        ) from exc
    ids = list(tokenizer(config.prompt_tuning_init_text)["input_ids"])
    if not ids:
        raise ConfigError("prompt_tuning_init_text tokenizes to no tokens; give a non-empty text.")
    # Repeat the text to fill every virtual token, then cut to length (PEFT's rule).
    return (ids * math.ceil(rows / len(ids)))[:rows]


def build_encoder(config: PromptLearningConfig, rows: int, width: int, out_width: int) -> nn.Module:
    """The trainable encoder of ``config`` (the full network, not only its outputs)."""
    if isinstance(config, MultitaskPromptTuningConfig):
        return MultitaskPromptTable(config, rows, width)
    if isinstance(config, PromptEncoderConfig):
        return PTuningEncoder(config, rows, width)
    if isinstance(config, PrefixTuningConfig):
        return PrefixEncoder(config, rows, width, out_width)
    return PromptTable(rows, width)
