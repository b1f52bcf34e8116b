"""The adaption prompt (LLaMA-Adapter): interop with PEFT both ways, generation, learning, bad input.

The invariant matrix (tests/test_invariants.py, kind "llama_attention") covers zero-init == base,
disable == base, merge refused, save -> load bit-exact and adapter-only training. PEFT is imported
only here, as the reference implementation.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import deltatune as dt

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
from safetensors import safe_open  # noqa: E402

ATOL = 1e-5
VOCAB = 64


def _gpt2(layers: int = 3) -> nn.Module:
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=layers, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2
    )
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.GPT2LMHeadModel(cfg).eval()


def _llama(kv_heads: int = 4, layers: int = 3, kind: str = "llama") -> nn.Module:
    if kind == "gpt2":
        return _gpt2(layers)
    cls_cfg, cls_model = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
    }[kind]
    cfg = cls_cfg(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls_model(cfg).eval()


def _ids(batch: int = 2, length: int = 7) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(1))


def _randomize(model: nn.Module, seed: int = 0) -> None:
    """Random prompts and non-zero gates (so a broken load cannot pass)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("adaption_prompt", "adaption_gate")):
                param.copy_(torch.randn(param.shape, generator=g) + (1.0 if name.endswith("gate") else 0.0))


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _greedy(model: nn.Module, ids: torch.Tensor, steps: int = 6) -> torch.Tensor:
    mask = torch.ones_like(ids)
    with torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps, do_sample=False, pad_token_id=0)


def _keys(folder: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(folder / "adapter_model.safetensors", "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)


MODELS = [
    pytest.param("llama", 4, id="llama-mha"),
    pytest.param("llama", 2, id="llama-gqa"),
    pytest.param("mistral", 2, id="mistral-gqa"),
    pytest.param("gpt2", 4, id="gpt2"),
]
ATTENTION = {"llama": "self_attn", "mistral": "self_attn", "gpt2": "attn"}  # PEFT's default target per type
PREFIX = {"llama": "model.layers", "mistral": "model.layers", "gpt2": "transformer.h"}


# ------------------------------------------------------------------------------------ interop
@pytest.mark.parametrize("kind,kv_heads", MODELS)
def test_peft_checkpoint_loads_with_same_outputs(kind: str, kv_heads: int, tmp_path: Path) -> None:
    base = _llama(kv_heads, kind=kind)
    config = peft.AdaptionPromptConfig(adapter_len=5, adapter_layers=2, task_type="CAUSAL_LM")
    theirs = peft.get_peft_model(copy.deepcopy(base), config)
    _randomize(theirs)
    theirs.save_pretrained(tmp_path)
    ours = dt.DeltaModel.from_pretrained(copy.deepcopy(base), tmp_path)
    ids = _ids()
    expected = _logits(theirs, ids)
    assert not torch.allclose(expected, _logits(base, ids), atol=1e-3), "the random adapter must matter"
    torch.testing.assert_close(_logits(ours, ids), expected, atol=ATOL, rtol=0)
    assert torch.equal(_greedy(ours, ids), _greedy(theirs, ids))


@pytest.mark.parametrize("kind,kv_heads", MODELS)
def test_deltatune_checkpoint_loads_in_peft(kind: str, kv_heads: int, tmp_path: Path) -> None:
    base = _llama(kv_heads, kind=kind)
    config = dict(adapter_len=5, adapter_layers=2, task_type="CAUSAL_LM")
    ours = dt.wrap(copy.deepcopy(base), dt.AdaptionPromptConfig(**config)).eval()
    _randomize(ours)
    ours.save_pretrained(tmp_path / "ours")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PEFT must read our adapter_config.json without complaint
        loaded_config = peft.PeftConfig.from_pretrained(tmp_path / "ours")
    assert isinstance(loaded_config, peft.AdaptionPromptConfig)
    assert (loaded_config.adapter_len, loaded_config.adapter_layers) == (5, 2)
    assert loaded_config.target_modules == ATTENTION[kind]
    theirs = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ours")
    ids = _ids()
    torch.testing.assert_close(_logits(theirs, ids), _logits(ours, ids), atol=ATOL, rtol=0)
    assert torch.equal(_greedy(theirs, ids), _greedy(ours, ids))
    # The same configuration saved by PEFT: the same tensor keys and shapes, the same config keys.
    peft.get_peft_model(copy.deepcopy(base), peft.AdaptionPromptConfig(**config)).save_pretrained(tmp_path / "peft")
    assert _keys(tmp_path / "ours") == _keys(tmp_path / "peft")
    assert set(_keys(tmp_path / "ours")) == {
        f"base_model.model.{PREFIX[kind]}.{i}.{ATTENTION[kind]}.{p}"
        for i in (1, 2)
        for p in ("adaption_prompt", "adaption_gate")
    }
    ours_json = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    peft_json = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert set(ours_json) - {"peft_version", "auto_mapping"} == set(peft_json) - {"peft_version", "auto_mapping"}
    assert ours_json["target_modules"] == peft_json["target_modules"] == ATTENTION[kind]


def test_parity_with_attention_bias(tmp_path: Path) -> None:
    """With biased projections PEFT's rule (o_proj applied with its bias to the prompt output) is kept."""
    base = _llama(2)
    for layer in base.model.layers:
        attn = layer.self_attn
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            old = getattr(attn, proj)
            new = nn.Linear(old.in_features, old.out_features, bias=True)
            with torch.no_grad():
                new.weight.copy_(old.weight)
                new.bias.normal_()
            setattr(attn, proj, new)
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.AdaptionPromptConfig(adapter_len=3, adapter_layers=3))
    _randomize(theirs)
    theirs.save_pretrained(tmp_path)
    ours = dt.DeltaModel.from_pretrained(copy.deepcopy(base), tmp_path)
    ids = _ids()
    torch.testing.assert_close(_logits(ours, ids), _logits(theirs, ids), atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------ behaviour
@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_zero_gate_equals_base(kind: str) -> None:
    base = _llama(2, kind=kind)  # grouped-query attention for Llama
    model = dt.wrap(copy.deepcopy(base), dt.AdaptionPromptConfig(adapter_len=4, adapter_layers=3))
    ids = _ids()
    assert torch.equal(_logits(model, ids), _logits(base, ids))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("adaption_gate"):
                param.fill_(0.5)
    assert not torch.allclose(_logits(model, ids), _logits(base, ids), atol=1e-3)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_generate_with_cache_matches_step_by_step_argmax(kind: str) -> None:
    model = dt.wrap(_llama(2, kind=kind), dt.AdaptionPromptConfig(adapter_len=5, adapter_layers=2)).eval()
    _randomize(model)
    ids = _ids(2, 5)
    generated = _greedy(model, ids, steps=8)
    seq = ids
    with torch.no_grad():
        for _ in range(8):
            logits = model(input_ids=seq, use_cache=False).logits
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, seq)


def test_learns_a_synthetic_task() -> None:
    """Tokens drawn from a fixed 4-token subset: the prompts alone must bring the loss near ln 4.

    The base is initialised with std 0.3 (not 0.02) so that its LM head can express a peaked
    distribution at all. One thread: ~3 s, where two threads on a busy 2-core machine took ~50 s.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _learn()
    finally:
        torch.set_num_threads(threads)


def _learn() -> None:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        initializer_range=0.3,
    )
    model = dt.wrap(transformers.LlamaForCausalLM(cfg), dt.AdaptionPromptConfig(adapter_len=8, adapter_layers=2))
    model.train()
    subset = torch.tensor([5, 11, 17, 23])
    g = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    losses = []
    for _ in range(200):
        ids = subset[torch.randint(0, 4, (8, 12), generator=g)]
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.4 * first and last < 2.0, (first, last)  # ln 4 = 1.39 is the best possible


def test_merge_is_refused_and_leaves_model_working() -> None:
    model = dt.wrap(_llama(2), dt.AdaptionPromptConfig(adapter_len=3, adapter_layers=2)).eval()
    _randomize(model)
    ids = _ids()
    before = _logits(model, ids)
    with pytest.raises(dt.MergeError, match="cannot be merged"):
        model.merge_adapter()
    with pytest.raises(dt.MergeError, match="cannot be merged"):
        model.merge_and_unload()
    assert torch.equal(_logits(model, ids), before)


def test_mixed_batch_raises_clear_error() -> None:
    model = dt.wrap(_llama(2), dt.AdaptionPromptConfig(adapter_len=3, adapter_layers=2)).eval()
    with pytest.raises(dt.DeltatuneError, match="mixed batch"):
        model(input_ids=_ids(), adapter_names=["default", dt.BASE])


def test_lifecycle_add_set_delete_save_load(tmp_path: Path) -> None:
    base = _llama(2)
    model = dt.wrap(copy.deepcopy(base), dt.AdaptionPromptConfig(adapter_len=3, adapter_layers=2)).eval()
    model.add_adapter("other", dt.AdaptionPromptConfig(adapter_len=5, adapter_layers=3))
    _randomize(model)
    ids = _ids()
    out_default = _logits(model, ids)
    model.set_adapter("other")
    out_other = _logits(model, ids)
    assert not torch.allclose(out_default, out_other, atol=1e-3)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        f"model.model.layers.{i}.self_attn.adapters.other.{p}"
        for i in range(3)
        for p in ("adaption_prompt", "adaption_gate")
    }
    with model.disable_adapters():
        assert torch.equal(_logits(model, ids), _logits(base, ids))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "other" / "adapter_config.json").is_file()
    loaded = dt.DeltaModel.from_pretrained(copy.deepcopy(base), tmp_path)
    loaded.load_adapter(tmp_path / "other", adapter_name="other")
    assert torch.equal(_logits(loaded, ids), out_default)
    loaded.set_adapter("other")
    assert torch.equal(_logits(loaded, ids), out_other)
    loaded.delete_adapter("other")
    loaded.set_adapter("default")
    assert torch.equal(_logits(loaded, ids), out_default)
    loaded.delete_adapter("default")
    assert not any(isinstance(m, dt.AdaptedLayer) for m in loaded.modules())
    assert torch.equal(_logits(loaded, ids), _logits(base, ids))


def test_bf16_base_keeps_fp32_adapter() -> None:
    base = _llama(2).to(torch.bfloat16)
    model = dt.wrap(base, dt.AdaptionPromptConfig(adapter_len=3, adapter_layers=2)).eval()
    _randomize(model)
    params = [p for p in model.parameters() if p.requires_grad]
    assert params and all(p.dtype == torch.float32 for p in params)
    out = _logits(model, _ids())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(adapter_len=0, adapter_layers=1), "adapter_len must be a positive integer"),
        (dict(adapter_len=None, adapter_layers=1), "adapter_len must be a positive integer"),
        (dict(adapter_len=4, adapter_layers=-1), "adapter_layers must be a positive integer"),
        (dict(adapter_len=4), "adapter_layers must be a positive integer"),
        (dict(adapter_len=4, adapter_layers=1, target_modules=["self_attn"]), "attribute name"),
        (dict(adapter_len=4, adapter_layers=1, target_modules="model.layers.0.self_attn"), "attribute name"),
        (dict(adapter_len=4, adapter_layers=1, layers_to_transform=[0]), "does not support layers_to_transform"),
        (dict(adapter_len=4, adapter_layers=1, exclude_modules=["x"]), "does not support exclude_modules"),
        (dict(adapter_len=4, adapter_layers=1, modules_to_save=["lm_head"]), "does not support modules_to_save"),
    ],
)
def test_invalid_config_raises(kwargs: dict, match: str) -> None:
    with pytest.raises(dt.ConfigError, match=match):
        dt.AdaptionPromptConfig(**kwargs)


def test_more_adapter_layers_than_the_model_has() -> None:
    model = _llama(2, layers=2)
    with pytest.raises(dt.ConfigError, match="set adapter_layers to at most 2"):
        dt.wrap(model, dt.AdaptionPromptConfig(adapter_len=4, adapter_layers=3))
    assert not any(isinstance(m, dt.AdaptedLayer) for m in model.modules()), "a failed add leaves the model alone"


def test_unsupported_model_types() -> None:
    bert = transformers.BertModel(
        transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
    )
    with pytest.raises(dt.UnsupportedLayerError, match=r"supports transformers model types .*not model type 'bert'"):
        dt.wrap(bert, dt.AdaptionPromptConfig(adapter_len=4, adapter_layers=1, target_modules="attention"))
    plain = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(dt.UnsupportedLayerError, match="no config.model_type.*LoRA"):
        dt.wrap(plain, dt.AdaptionPromptConfig(adapter_len=4, adapter_layers=1))


def test_wrong_target_names() -> None:
    with pytest.raises(dt.TargetError, match="for llama: 'self_attn'"):
        dt.wrap(_llama(2), dt.AdaptionPromptConfig(adapter_len=4, adapter_layers=1, target_modules="attention"))
    with pytest.raises(dt.UnsupportedLayerError, match="LlamaMLP.*LlamaAttention"):
        dt.wrap(_llama(2), dt.AdaptionPromptConfig(adapter_len=4, adapter_layers=1, target_modules="mlp"))


def test_adaption_prompt_over_lora_equals_lora_under_adaption_prompt(tmp_path) -> None:
    """Added after LoRA on q_proj/v_proj, the prompt wraps the attention around the LoRA layers: the same
    model as adding them the other way round, and the LoRA adapter still saves under PEFT's keys."""
    from safetensors import safe_open

    lora = dt.LoraConfig(target_modules=["q_proj", "v_proj"], r=2, init_lora_weights=False)
    prompt = dt.AdaptionPromptConfig(adapter_len=4, adapter_layers=2)
    torch.manual_seed(3)
    first = dt.wrap(_llama(2), lora, adapter_name="lora")
    first.add_adapter("prompt", prompt)
    torch.manual_seed(3)
    second = dt.wrap(_llama(2), prompt, adapter_name="prompt")
    second.add_adapter("lora", lora)
    second.load_state_dict(first.state_dict())  # the same weights, whatever order they were made in
    for model in (first, second):
        for name, param in model.named_parameters():
            if name.endswith("adaption_gate"):
                torch.nn.init.constant_(param, 0.5)
        model.set_adapter(["lora", "prompt"])
        model.eval()
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))
    out = first(ids).logits
    torch.testing.assert_close(out, second(ids).logits, atol=1e-6, rtol=0)
    with first.disable_adapters():
        assert not torch.allclose(first(ids).logits, out, atol=1e-4)
    first.save_pretrained(tmp_path, selected_adapters=["lora"])
    with safe_open(str(tmp_path / "lora" / "adapter_model.safetensors"), "pt") as fh:
        keys = set(fh.keys())
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys and len(keys) == 3 * 4  # 3 layers


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_default_target_is_the_model_types_attention(kind: str) -> None:
    config = dt.AdaptionPromptConfig(adapter_len=2, adapter_layers=1)
    assert config.target_modules is None
    model = dt.wrap(_llama(2, kind=kind), config)
    assert model.peft_config["default"].target_modules == ATTENTION[kind]
    assert [n for n, _ in model.adapted_layers()] == [f"{PREFIX[kind]}.2.{ATTENTION[kind]}"]
