"""What deltatune knows about transformers models, without importing transformers.

The default target table follows the attention projections that PEFT users expect per
``model.config.model_type`` (query and value projections of self-attention).
"""

from __future__ import annotations

from torch import nn

QUERY_VALUE = ["q_proj", "v_proj"]
DEFAULT_LORA_TARGETS: dict[str, list[str]] = {
    **{
        t: QUERY_VALUE
        for t in (
            "llama",
            "llama4",
            "mistral",
            "mixtral",
            "qwen2",
            "qwen2_moe",
            "qwen3",
            "qwen3_moe",
            "gemma",
            "gemma2",
            "gemma3_text",
            "opt",
            "bart",
            "mbart",
            "gptj",
            "stablelm",
            "starcoder2",
            "olmo",
            "olmo2",
            "granite",
            "cohere",
            "persimmon",
            "m2m_100",
            "marian",
            "pegasus",
            "whisper",
        )
    },
    **{t: ["query", "value"] for t in ("bert", "roberta", "xlm-roberta", "electra", "camembert", "layoutlm")},
    "distilbert": ["q_lin", "v_lin"],
    "t5": ["q", "v"],
    "mt5": ["q", "v"],
    "gpt2": ["c_attn"],
    "gpt_bigcode": ["c_attn"],
    "gpt_neox": ["query_key_value"],
    "falcon": ["query_key_value"],
    "bloom": ["query_key_value"],
    "mpt": ["Wqkv"],
    "phi": ["q_proj", "v_proj", "fc1", "fc2"],
    "phi3": ["qkv_proj"],
    "deberta-v2": ["query_proj", "value_proj"],
    "deberta": ["in_proj"],
}
# Task heads trained in full and saved with the adapter, by task_type (as PEFT does).
TASK_HEADS: dict[str, tuple[str, ...]] = {
    "SEQ_CLS": ("classifier", "score"),
    "TOKEN_CLS": ("classifier", "score"),
    "QUESTION_ANS": ("qa_outputs",),
}


def model_type(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    value = getattr(config, "model_type", None)
    return value if isinstance(value, str) else None


def default_targets(model: nn.Module) -> list[str] | None:
    """The default LoRA targets for this model's type, or None when unknown."""
    kind = model_type(model)
    return list(DEFAULT_LORA_TARGETS[kind]) if kind in DEFAULT_LORA_TARGETS else None


def output_head(model: nn.Module) -> nn.Module | None:
    """The model's output embedding (LM head), which "all-linear" leaves alone."""
    getter = getattr(model, "get_output_embeddings", None)
    if callable(getter):
        try:
            head = getter()
        except (AttributeError, NotImplementedError):
            return None
        return head if isinstance(head, nn.Module) else None
    return None
