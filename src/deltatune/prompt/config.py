"""Configs of the prompt-learning family, with PEFT's field names, defaults and ``peft_type`` values.

These methods add virtual tokens instead of adapting layers, so the layer-targeting fields of
:class:`~deltatune.config.AdapterConfig` do not apply: they are refused when set and left out
of ``adapter_config.json``. The model-shape fields (``token_dim``, ``num_layers``, ...) may be
left None; they are then filled from the model's transformers config when the adapter is added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from deltatune.config import AdapterConfig, _help
from deltatune.errors import ConfigError

_TARGETING_FIELDS = ("target_modules", "exclude_modules", "layers_to_transform", "layers_pattern")
PROMPT_INITS = ("RANDOM", "TEXT", "SAMPLE_VOCAB")
MULTITASK_INITS = ("RANDOM", "TEXT", "AVERAGE_SOURCE_TASKS", "EXACT_SOURCE_TASK", "ONLY_SOURCE_SHARED")


@dataclass
class PromptLearningConfig(AdapterConfig):
    """Settings shared by prompt tuning, P-tuning, prefix tuning and multitask prompt tuning."""

    # "embedding": virtual tokens are prepended to the input embeddings; "prefix": to every layer's keys/values.
    prompt_kind: ClassVar[str] = "embedding"

    num_virtual_tokens: int | None = _help("Number of virtual tokens (required).")
    token_dim: int | None = _help("Width of a virtual token; None: the model's hidden size.")
    num_transformer_submodules: int | None = _help("1, or 2 for encoder-decoder models (None: from task_type).")
    num_attention_heads: int | None = _help("Attention heads of the model (None: from its config).")
    num_layers: int | None = _help("Transformer layers of the model (None: from its config).")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in _TARGETING_FIELDS:
            if getattr(self, name) is not None:
                raise ConfigError(
                    f"{type(self).__name__} does not adapt layers, so {name} does not apply; leave it unset "
                    "(use LoraConfig & co. to adapt layers)."
                )
        n = self.num_virtual_tokens
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"num_virtual_tokens must be a positive integer, got {n!r}; e.g. num_virtual_tokens=20.")
        if self.num_transformer_submodules not in (None, 1, 2):
            raise ConfigError(
                f"num_transformer_submodules must be 1, 2 or None, got {self.num_transformer_submodules!r}."
            )
        for name in ("token_dim", "num_attention_heads", "num_layers"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer or None (filled from the model), got {value!r}.")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for name in _TARGETING_FIELDS:  # PEFT's prompt configs have no such keys and would warn about them
            out.pop(name, None)
        return out


@dataclass
class PromptTuningConfig(PromptLearningConfig):
    """Prompt tuning (Lester et al. 2021): trainable virtual-token embeddings before the input."""

    peft_type: ClassVar[str] = "PROMPT_TUNING"

    prompt_tuning_init: str = _help(
        "RANDOM, TEXT (embeddings of a text) or SAMPLE_VOCAB (random vocab rows).", "RANDOM"
    )
    prompt_tuning_init_text: str | None = _help("The text whose token embeddings start the prompt (TEXT init).")
    tokenizer_name_or_path: str | None = _help("Tokenizer (folder or Hub id) that tokenizes the TEXT init.")
    tokenizer_kwargs: dict[str, Any] | None = _help("Keyword arguments for AutoTokenizer.from_pretrained (TEXT init).")

    _inits: ClassVar[tuple[str, ...]] = PROMPT_INITS

    def __post_init__(self) -> None:
        super().__post_init__()
        init = getattr(self.prompt_tuning_init, "value", self.prompt_tuning_init)
        if init not in self._inits:
            raise ConfigError(f"prompt_tuning_init={init!r} is unknown; use one of {list(self._inits)}.")
        self.prompt_tuning_init = init
        if init == "TEXT" and not self.tokenizer_name_or_path:
            raise ConfigError(
                "prompt_tuning_init='TEXT' needs a tokenizer: set tokenizer_name_or_path to the base model's "
                "tokenizer (a folder or Hub id), or use prompt_tuning_init='RANDOM'."
            )
        if init == "TEXT" and not self.prompt_tuning_init_text:
            raise ConfigError("prompt_tuning_init='TEXT' needs prompt_tuning_init_text, the text to start from.")
        if self.tokenizer_kwargs and init != "TEXT":
            raise ConfigError("tokenizer_kwargs is only used with prompt_tuning_init='TEXT'; remove it or set TEXT.")


@dataclass
class PromptEncoderConfig(PromptLearningConfig):
    """P-tuning (Liu et al. 2021): virtual tokens produced by a small MLP or LSTM encoder."""

    peft_type: ClassVar[str] = "P_TUNING"

    encoder_reparameterization_type: str = _help("MLP or LSTM: the network that produces the prompt.", "MLP")
    encoder_hidden_size: int | None = _help("Hidden width of the encoder (None: token_dim).")
    encoder_num_layers: int = _help("LSTM layers (the MLP always has 3 linear layers).", 2)
    encoder_dropout: float = _help("Dropout between LSTM layers.", 0.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        kind = getattr(self.encoder_reparameterization_type, "value", self.encoder_reparameterization_type)
        if kind not in ("MLP", "LSTM"):
            raise ConfigError(f"encoder_reparameterization_type={kind!r} is unknown; use 'MLP' or 'LSTM'.")
        self.encoder_reparameterization_type = kind
        if not isinstance(self.encoder_num_layers, int) or self.encoder_num_layers < 1:
            raise ConfigError(f"encoder_num_layers must be a positive integer, got {self.encoder_num_layers!r}.")
        if not 0.0 <= float(self.encoder_dropout) < 1.0:
            raise ConfigError(f"encoder_dropout must be in [0, 1), got {self.encoder_dropout!r}.")


@dataclass
class PrefixTuningConfig(PromptLearningConfig):
    """Prefix tuning (Li & Liang 2021): trainable keys/values prepended in every attention layer."""

    peft_type: ClassVar[str] = "PREFIX_TUNING"
    prompt_kind: ClassVar[str] = "prefix"

    encoder_hidden_size: int | None = _help("Hidden width of the prefix projection (None: token_dim).")
    prefix_projection: bool = _help("Produce the prefix with a 2-layer MLP (reparameterisation).", False)
    init_weights: str | None = _help("None: random prefix; 'zero': a zero prefix (zero last projection).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init_weights not in (None, "zero"):
            raise ConfigError(f"init_weights={self.init_weights!r} is unknown; use None (random) or 'zero'.")


@dataclass
class MultitaskPromptTuningConfig(PromptTuningConfig):
    """Multitask prompt tuning (Wang et al. 2023): a shared prompt times a low-rank per-task matrix."""

    peft_type: ClassVar[str] = "MULTITASK_PROMPT_TUNING"

    prompt_tuning_init_state_dict_path: str | None = _help("Source-task checkpoint for the *_SOURCE_* inits.")
    prompt_tuning_init_task: int = _help("Source task used by EXACT_SOURCE_TASK.", 0)
    num_ranks: int = _help("Rank of the per-task matrix (cols @ rows).", 1)
    num_tasks: int = _help("Number of tasks (task_ids run from 0 to num_tasks - 1).", 1)

    _inits: ClassVar[tuple[str, ...]] = MULTITASK_INITS

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_ranks", "num_tasks"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        needs_source = self.prompt_tuning_init.endswith(("SOURCE_TASKS", "SOURCE_TASK", "SOURCE_SHARED"))
        if needs_source and not self.prompt_tuning_init_state_dict_path:
            raise ConfigError(
                f"prompt_tuning_init={self.prompt_tuning_init!r} starts from a source-task checkpoint: set "
                "prompt_tuning_init_state_dict_path to its adapter_model.safetensors."
            )
