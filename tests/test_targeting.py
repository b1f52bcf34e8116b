"""Targeting follows PEFT's rules (regex full match, suffix lists, all-linear, layers) and is stricter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tests.models import tiny_bert_cls, tiny_llama
from transformers import AutoConfig, AutoModel

import deltatune as dt


def _targets(model: dt.DeltaModel) -> list[str]:
    return [name for name, _ in model.adapted_layers()]


def test_regex_is_a_full_match() -> None:
    model = dt.wrap(tiny_llama(), dt.LoraConfig(target_modules=r"model\.layers\.1\.self_attn\.(q|v)_proj"))
    assert _targets(model) == ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]
    with pytest.raises(dt.TargetError):  # "q_proj" alone does not fully match any module name
        dt.wrap(tiny_llama(), dt.LoraConfig(target_modules="q_proj"))


def test_list_matches_names_and_dotted_suffixes() -> None:
    model = dt.wrap(tiny_llama(), dt.LoraConfig(target_modules=["self_attn.q_proj", "model.layers.0.mlp.up_proj"]))
    assert _targets(model) == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.mlp.up_proj",
        "model.layers.1.self_attn.q_proj",
    ]
    with pytest.raises(dt.TargetError):  # "proj" is no dotted suffix of "q_proj"
        dt.wrap(tiny_llama(), dt.LoraConfig(target_modules=["proj"]))


def test_all_linear_skips_the_output_head_and_saves_leaf_names() -> None:
    model = dt.wrap(tiny_llama(), dt.LoraConfig(target_modules="all-linear"))
    names = _targets(model)
    assert len(names) == 2 * 7 and "lm_head" not in names
    assert model.peft_config["default"].target_modules == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


def test_all_linear_on_classifier_keeps_head_trained_in_full() -> None:
    model = dt.wrap(tiny_bert_cls(), dt.LoraConfig(target_modules="all-linear", task_type="SEQ_CLS"))
    names = _targets(model)
    assert "classifier" not in names and "bert.pooler.dense" in names
    assert model.peft_config["default"].modules_to_save == ["classifier"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "model.classifier.modules_to_save.default.weight" in trainable


def test_exclude_modules() -> None:
    model = dt.wrap(tiny_llama(), dt.LoraConfig(target_modules="all-linear", exclude_modules=["mlp.down_proj"]))
    assert not any(n.endswith("down_proj") for n in _targets(model))
    model = dt.wrap(tiny_llama(), dt.LoraConfig(target_modules=["q_proj"], exclude_modules=r".*layers\.0.*"))
    assert _targets(model) == ["model.layers.1.self_attn.q_proj"]


def test_layers_to_transform_with_and_without_pattern() -> None:
    model = dt.wrap(tiny_llama(), dt.LoraConfig(target_modules=["q_proj"], layers_to_transform=[1]))
    assert _targets(model) == ["model.layers.1.self_attn.q_proj"]
    model = dt.wrap(
        tiny_llama(), dt.LoraConfig(target_modules=["v_proj"], layers_to_transform=0, layers_pattern="layers")
    )
    assert _targets(model) == ["model.layers.0.self_attn.v_proj"]
    with pytest.raises(dt.TargetError, match="selects no module"):
        dt.wrap(tiny_llama(), dt.LoraConfig(target_modules=["q_proj"], layers_to_transform=[5]))


def test_rank_and_alpha_patterns() -> None:
    cfg = dt.LoraConfig(
        target_modules=["q_proj", "v_proj"],
        r=4,
        lora_alpha=8,
        rank_pattern={r"layers\.1\.self_attn\.q_proj": 2, "v_proj": 6},
        alpha_pattern={"q_proj": 1},
    )
    layers = dict(dt.wrap(tiny_llama(), cfg).adapted_layers())
    ranks = {n: (l.adapters["default"].r, l.adapters["default"].scaling) for n, l in layers.items()}
    assert ranks["model.layers.0.self_attn.q_proj"] == (4, 1 / 4)
    assert ranks["model.layers.1.self_attn.q_proj"] == (2, 1 / 2)
    assert ranks["model.layers.1.self_attn.v_proj"] == (6, 8 / 6)


def test_rslora_scaling() -> None:
    layers = dict(
        dt.wrap(
            tiny_llama(), dt.LoraConfig(target_modules=["q_proj"], r=16, lora_alpha=8, use_rslora=True)
        ).adapted_layers()
    )
    assert next(iter(layers.values())).adapters["default"].scaling == pytest.approx(8 / 4)


TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 48, "vocab_size": 64}
DEFAULTS = {
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
    "opt": ["q_proj", "v_proj"],
    "bart": ["q_proj", "v_proj"],
    "gpt2": ["c_attn"],
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "t5": ["q", "v"],
}
EXTRA = {
    "gemma": {"head_dim": 8, "num_key_value_heads": 2},
    "opt": {"ffn_dim": 48, "word_embed_proj_dim": 32},
    "bart": {
        "encoder_layers": 1,
        "decoder_layers": 1,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 48,
        "decoder_ffn_dim": 48,
    },
    "t5": {"num_layers": 1, "num_decoder_layers": 1, "d_kv": 8, "d_ff": 48, "num_heads": 4},
    "distilbert": {"n_layers": 1, "dim": 32, "hidden_dim": 48, "n_heads": 4},
    "gpt2": {"n_layer": 1, "n_embd": 32, "n_head": 4},
}


@pytest.mark.parametrize("model_type", sorted(DEFAULTS))
def test_default_targets_per_model_type(model_type: str) -> None:
    config = AutoConfig.for_model(model_type, **{**TINY, **EXTRA.get(model_type, {})})
    torch.manual_seed(0)
    model = dt.wrap(AutoModel.from_config(config), dt.LoraConfig())
    leaves = {n.rsplit(".", 1)[-1] for n in _targets(model)}
    assert leaves == set(DEFAULTS[model_type])
    assert sorted(model.peft_config["default"].target_modules) == sorted(DEFAULTS[model_type])


def _fresh_llama() -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_llama()


def test_targets_inside_a_module_adapted_by_another_method(tmp_path: Path) -> None:
    """LoRA on q_proj/v_proj after an adaption prompt wrapped self_attn: the projections are adapted
    (inside the outer layer's base_layer), change the outputs, train, and save and load with both adapters."""
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(1))
    model = dt.wrap(_fresh_llama(), dt.AdaptionPromptConfig(adapter_len=3, adapter_layers=2))
    for name, param in model.named_parameters():
        if name.endswith("adaption_gate"):
            torch.nn.init.constant_(param, 0.5)  # a non-zero gate: the prompt acts
    model.eval()
    prompt_only = model(ids).logits
    model.add_adapter("lora", dt.LoraConfig(target_modules=["q_proj", "v_proj"], r=2, init_lora_weights=False))
    expected = [f"model.layers.{i}.self_attn{leaf}" for i in (0, 1) for leaf in ("", ".q_proj", ".v_proj")]
    assert _targets(model) == expected
    model.set_adapter(["default", "lora"])
    assert sum(p.requires_grad for n, p in model.named_parameters() if ".lora_" in n) == 8
    both = model(ids).logits
    assert not torch.allclose(both, prompt_only, atol=1e-4)

    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "lora" / "adapter_model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert len(keys) == 8 and "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    loaded = dt.DeltaModel.from_pretrained(_fresh_llama(), tmp_path)
    loaded.load_adapter(tmp_path / "lora", "lora")
    loaded.set_adapter(["default", "lora"])
    torch.testing.assert_close(loaded(ids).logits, both, atol=1e-5, rtol=0)
    loaded.delete_adapter("lora")  # the inner layers go, the outer ones stay
    assert _targets(loaded) == [f"model.layers.{i}.self_attn" for i in (0, 1)]
    torch.testing.assert_close(loaded(ids).logits, prompt_only, atol=1e-5, rtol=0)
