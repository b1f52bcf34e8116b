"""What deltatune knows about transformers models, without importing transformers.

The default targets follow what PEFT users expect per ``model.config.model_type``: for LoRA the
query and value projections of self-attention; other methods have their own table or rule
(``DEFAULT_TARGETS``), looked up by the config's ``peft_type``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
# LN tuning: the norms of each block, as PEFT's table has them; the BERT family is deltatune's
# own addition (PEFT has no default there).
DEFAULT_LN_TUNING_TARGETS: dict[str, list[str]] = {
    **{t: ["input_layernorm", "post_attention_layernorm", "norm"] for t in ("llama", "mistral", "gemma")},
    **{
        t: [
            "input_layernorm",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
            "norm",
        ]
        for t in ("gemma2", "gemma3_text")
    },
    "qwen2": ["post_attention_layernorm"],
    "qwen3": ["post_attention_layernorm"],
    "bloom": ["input_layernorm", "post_attention_layernorm", "ln_f"],
    "falcon": ["input_layernorm", "post_attention_layernorm", "ln_f"],
    "llava": [
        "multi_modal_projector",
        "input_layernorm",
        "post_attention_layernorm",
        "norm",
        "embed_tokens",
        "lm_head",
    ],
    "t5": ["layer_norm", "final_layer_norm"],
    "mt5": ["layer_norm", "final_layer_norm"],
    "bart": ["self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"],
    "gpt2": ["ln_1", "ln_2", "ln_f"],
    "gptj": ["ln_1", "ln_f"],
    "phi": ["input_layernorm", "final_layernorm"],
    "blip-2": ["layernorm", "LayerNorm", "final_layer_norm", "self_attn_layer_norm"],
    **{t: ["LayerNorm"] for t in ("bert", "roberta", "xlm-roberta", "electra", "camembert")},
}
# Bottleneck adapters (deltatune's own): the output projection of attention and of the
# feed-forward block ("houlsby", Houlsby et al. 2019) or of the feed-forward block only
# ("pfeiffer", Pfeiffer et al. 2021). BERT's regexes keep "attention.output.dense" apart from
# the feed-forward "output.dense", which a suffix would also match.
_DECODER_HOULSBY = ["o_proj", "down_proj"]
DEFAULT_BOTTLENECK_TARGETS: dict[str, dict[str, list[str] | str]] = {
    "houlsby": {
        **{t: _DECODER_HOULSBY for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")},
        **{
            t: r".*\.layer\.\d+\.(attention\.output|output)\.dense"
            for t in ("bert", "roberta", "xlm-roberta", "electra", "camembert")
        },
        "distilbert": ["attention.out_lin", "ffn.lin2"],
        "gpt2": ["attn.c_proj", "mlp.c_proj"],
        "t5": ["SelfAttention.o", "EncDecAttention.o", "wo"],
        "mt5": ["SelfAttention.o", "EncDecAttention.o", "wo"],
    },
    "pfeiffer": {
        **{t: ["down_proj"] for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")},
        **{t: r".*\.layer\.\d+\.output\.dense" for t in ("bert", "roberta", "xlm-roberta", "electra", "camembert")},
        "distilbert": ["ffn.lin2"],
        "gpt2": ["mlp.c_proj"],
        "t5": ["wo"],
        "mt5": ["wo"],
    },
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


def default_targets(model: nn.Module, config: Any = None) -> list[str] | str | None:
    """The default targets of ``config``'s method (LoRA's without a config) for this model, or None."""
    rule = DEFAULT_TARGETS.get(getattr(config, "peft_type", "LORA") if config is not None else "LORA")
    if rule is None:
        return None
    if callable(rule):
        return rule(model, config)
    kind = model_type(model)
    return list(rule[kind]) if kind in rule else None


def is_norm(module: nn.Module) -> bool:
    """A normalisation layer with a learned affine part: its class (or a public base class) is
    named ``...Norm`` (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, LlamaRMSNorm, T5LayerNorm, ...) and
    every parameter it owns is a 1-D vector.

    The name is the rule because transformers defines one norm class per model with no common
    base class, and the core does not import transformers; the parameter check keeps out
    look-alikes whose parameters are matrices. Batch and instance norms (private bases
    ``_BatchNorm`` / ``_InstanceNorm``) are left out: their running statistics are state that
    a tuned copy would fork.
    """
    named = any(c.__name__.endswith("Norm") and not c.__name__.startswith("_") for c in type(module).__mro__)
    params = list(module.parameters(recurse=False))
    return named and bool(params) and all(p.dim() == 1 for p in params)


def input_embedding_name(model: nn.Module) -> str | None:
    """The name of the model's input embedding (``get_input_embeddings()``), or None."""
    getter = getattr(model, "get_input_embeddings", None)
    if not callable(getter):
        return None
    try:
        embedding = getter()
    except (AttributeError, NotImplementedError):
        return None
    return next((name for name, module in model.named_modules() if module is embedding), None)


def tied_output_head(model: nn.Module) -> str | None:
    """The name of the output head whose weight is tied to the input embedding, or None.

    Tied means the two modules hold the same weight tensor, or the model's config says
    ``tie_word_embeddings`` (the rule PEFT follows).
    """
    head = output_head(model)
    embedding_name = input_embedding_name(model)
    if head is None or embedding_name is None:
        return None
    embedding = model.get_submodule(embedding_name)
    same = getattr(head, "weight", None) is getattr(embedding, "weight", None)
    if not same and getattr(getattr(model, "config", None), "tie_word_embeddings", False) is not True:
        return None
    return next((name for name, module in model.named_modules() if module is head), None)


def _modules_with_bias(model: nn.Module, config: Any) -> list[str] | None:
    """Bias tuning's default (BitFit): every dense layer, convolution and norm that owns a bias."""
    from deltatune import targeting, weights

    found = []
    for name, module in targeting.walk(model):
        base = targeting.unwrap(module)
        if base._parameters.get("bias") is None:
            continue
        kind = weights.layer_kind(base)
        if kind in ("linear", "conv") or (kind is None and is_norm(base)):
            found.append(name)
    return found or None


def _input_embedding(model: nn.Module, config: Any) -> list[str]:
    """Trainable tokens' default: the input embedding (PEFT falls back to "embed_tokens")."""
    return [input_embedding_name(model) or "embed_tokens"]


def _bottleneck_targets(model: nn.Module, config: Any) -> list[str] | str | None:
    """Bottleneck adapters' default: the preset ``style`` ("houlsby" unless set) for this model type."""
    table = DEFAULT_BOTTLENECK_TARGETS[getattr(config, "style", None) or "houlsby"]
    kind = model_type(model)
    return table.get(kind) if kind in table else None


# AdaLoRA: PEFT's table for the method (wider than LoRA's for T5, BART, OPT, RoBERTa, DeBERTa-v2).
DEFAULT_ADALORA_TARGETS: dict[str, list[str]] = {
    **{
        t: QUERY_VALUE
        for t in ("llama", "llama4", "gptj", "gpt_neo", "gemma", "gemma2", "gemma3_text", "qwen2", "qwen3")
    },
    **{t: ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"] for t in ("bart", "opt")},
    "t5": ["q", "k", "v", "o", "wi", "wo"],
    "mt5": ["q", "k", "v", "o", "wi_0", "wi_1", "wo"],
    "gpt2": ["c_attn"],
    "gpt_bigcode": ["c_attn"],
    "bloom": ["query_key_value"],
    "gpt_neox": ["query_key_value"],
    "bert": ["query", "value"],
    "roberta": ["query", "key", "value", "dense"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj", "dense"],
    "deberta": ["in_proj"],
    "nemotron_h": ["q_proj", "k_proj", "v_proj", "o_proj"],
}


# Per method (peft_type): a table by model type, or a rule computed from the model and config.
DEFAULT_TARGETS: dict[str, dict[str, list[str]] | Callable[[nn.Module, Any], list[str] | str | None]] = {
    "LORA": DEFAULT_LORA_TARGETS,
    "ADALORA": DEFAULT_ADALORA_TARGETS,
    "LN_TUNING": DEFAULT_LN_TUNING_TARGETS,
    "TRAINABLE_TOKENS": _input_embedding,
    "BEFT": _modules_with_bias,
    "DELTATUNE_BOTTLENECK": _bottleneck_targets,
}


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
