"""Interop with Hugging Face PEFT, both ways, on tiny transformers models.

Every case builds one seeded base model, then:

- PEFT -> deltatune: ``peft.get_peft_model`` (+ ``add_adapter``), random adapter weights (and
  random trained copies / biases, so a broken load cannot pass), ``save_pretrained``; deltatune
  loads the folder onto a fresh copy of the base and must give the same logits (atol 1e-5).
- deltatune -> PEFT: the same with the roles swapped; ``PeftConfig.from_pretrained`` and
  ``PeftModel.from_pretrained`` must accept what deltatune wrote.
- Both saves of the same configuration hold the same safetensors keys with the same shapes,
  and the same files in the same folders.

PEFT is only imported here, as the reference implementation; deltatune never imports it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import deltatune as dt

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
from safetensors import safe_open  # noqa: E402

ATOL = 1e-5
VOCAB = 64


# ------------------------------------------------------------------------------------ models
def _quiet(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build().eval()


def tiny_llama() -> torch.nn.Module:
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        attention_bias=True,  # so that bias="lora_only" / "all" have something to train
    )
    return _quiet(lambda: transformers.LlamaForCausalLM(cfg))


def tiny_bert() -> torch.nn.Module:
    cfg = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        num_labels=3,
    )
    return _quiet(lambda: transformers.BertForSequenceClassification(cfg))


def tiny_bert_tokens() -> torch.nn.Module:
    cfg = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        num_labels=5,
    )
    return _quiet(lambda: transformers.BertForTokenClassification(cfg))


def tiny_gpt2() -> torch.nn.Module:
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    return _quiet(lambda: transformers.GPT2LMHeadModel(cfg))


def tiny_t5() -> torch.nn.Module:
    cfg = transformers.T5Config(
        vocab_size=VOCAB,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        decoder_start_token_id=0,
        eos_token_id=1,
        pad_token_id=0,
    )
    return _quiet(lambda: transformers.T5ForConditionalGeneration(cfg))


def _inputs(kind: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, VOCAB, (2, 7), generator=g)
    if kind.startswith("bert"):
        ids[1, -2:] = 0  # padding: the embedding's padding_idx
        mask = torch.ones_like(ids)
        mask[1, -2:] = 0
        return {"input_ids": ids, "attention_mask": mask}
    if kind == "t5":
        return {"input_ids": ids, "decoder_input_ids": torch.randint(2, VOCAB, (2, 5), generator=g)}
    return {"input_ids": ids}


MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "llama": tiny_llama,
    "bert": tiny_bert,
    "bert_tokens": tiny_bert_tokens,
    "gpt2": tiny_gpt2,
    "t5": tiny_t5,
}
_BASES: dict[str, torch.nn.Module] = {}


def fresh_base(kind: str) -> torch.nn.Module:
    """A fresh copy of one seeded base model (both libraries modify the model in place)."""
    if kind not in _BASES:
        _BASES[kind] = MODELS[kind]()
    return copy.deepcopy(_BASES[kind])


# ------------------------------------------------------------------------------------ cases
@dataclasses.dataclass
class Case:
    id: str
    model: str
    adapters: dict[str, dict[str, Any]]  # adapter name -> LoraConfig kwargs (the same for both libraries)


CASES = [
    Case(
        "llama-qv",
        "llama",
        {
            "default": dict(
                r=4,
                lora_alpha=8,
                lora_dropout=0.1,
                init_lora_weights="gaussian",
                target_modules=["q_proj", "v_proj"],
                task_type="CAUSAL_LM",
            )
        },
    ),
    Case(
        "llama-rslora-patterns",
        "llama",
        {
            "default": dict(
                r=4,
                lora_alpha=8,
                use_rslora=True,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
                rank_pattern={"q_proj": 2, "layers.1.self_attn.v_proj": 6},
                alpha_pattern={"o_proj": 3, r"layers\.0\.mlp\.down_proj": 16},
            )
        },
    ),
    Case("llama-all-linear", "llama", {"default": dict(r=2, lora_alpha=4, target_modules="all-linear")}),
    Case(
        "llama-embedding-regex",
        "llama",
        {"default": dict(r=3, lora_alpha=6, target_modules=r".*(embed_tokens|layers\.1\.self_attn\.q_proj)")},
    ),
    # "norm" selects model.norm and, by PEFT's plain-suffix rule, every *_layernorm too.
    Case(
        "llama-modules-to-save",
        "llama",
        {"default": dict(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head", "norm"])},
    ),
    Case(
        "llama-layers-exclude",
        "llama",
        {
            "default": dict(
                r=2,
                target_modules=["q_proj", "v_proj", "gate_proj", "up_proj"],
                layers_to_transform=[1],
                layers_pattern="layers",
                exclude_modules=["up_proj"],
            )
        },
    ),
    Case("bert-all-linear", "bert", {"default": dict(r=2, target_modules="all-linear", task_type="SEQ_CLS")}),
    Case("gpt2-all-linear-auto-fan-in", "gpt2", {"default": dict(r=2, target_modules="all-linear")}),
    Case("t5-all-linear", "t5", {"default": dict(r=2, target_modules="all-linear", task_type="SEQ_2_SEQ_LM")}),
    Case("t5-shared", "t5", {"default": dict(r=2, target_modules=["shared", "q"])}),
    Case(
        "llama-bias-lora-only", "llama", {"default": dict(r=2, target_modules=["q_proj", "k_proj"], bias="lora_only")}
    ),
    Case("llama-other-name", "llama", {"task_a": dict(r=4, lora_alpha=16, target_modules=["v_proj", "up_proj"])}),
    Case("bert-seq-cls", "bert", {"default": dict(r=4, lora_alpha=8, task_type="SEQ_CLS")}),
    Case(
        "bert-two-adapters",
        "bert",
        {
            "default": dict(r=4, lora_alpha=8, task_type="SEQ_CLS", target_modules=["query", "value"]),
            "other": dict(r=2, lora_alpha=2, task_type="SEQ_CLS", target_modules=["key", "dense"], use_rslora=True),
        },
    ),
    Case("bert-bias-all", "bert", {"default": dict(r=2, task_type="SEQ_CLS", target_modules=["query"], bias="all")}),
    Case(
        "bert-embedding",
        "bert",
        {"default": dict(r=2, target_modules=["word_embeddings", "query"], task_type="SEQ_CLS")},
    ),
    Case(
        "bert-token-cls",
        "bert_tokens",
        {"default": dict(r=2, lora_alpha=4, target_modules=["query", "value"], task_type="TOKEN_CLS")},
    ),
    Case(
        "gpt2-conv1d",
        "gpt2",
        {
            "default": dict(
                r=4,
                lora_alpha=8,
                target_modules=["c_attn", "c_proj", "c_fc"],
                fan_in_fan_out=True,
                task_type="CAUSAL_LM",
            )
        },
    ),
    Case(
        "gpt2-wte-two-adapters",
        "gpt2",
        {
            "first": dict(r=2, lora_alpha=4, target_modules=["wte", "c_attn"], fan_in_fan_out=True),
            "second": dict(r=3, target_modules=["c_fc"], fan_in_fan_out=True, bias="lora_only"),
        },
    ),
    Case(
        "t5-qv-wo",
        "t5",
        {"default": dict(r=4, lora_alpha=8, target_modules=["q", "v", "wo"], task_type="SEQ_2_SEQ_LM")},
    ),
    Case(
        "t5-embed-k-wi",
        "t5",
        {"default": dict(r=2, lora_alpha=4, target_modules=["embed_tokens", "k", "wi"], rank_pattern={"wi": 3})},
    ),
]


# ------------------------------------------------------------------------------------ helpers
def logits(model: torch.nn.Module, kind: str) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**_inputs(kind)).logits


def randomize_trainable(model: torch.nn.Module, seed: int) -> None:
    """Random values in every trainable tensor: LoRA factors, trained copies, trained biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=g) * 0.3)


def subfolder(name: str) -> str | None:
    return None if name == "default" else name


def folder_of(root: Path, name: str) -> Path:
    return root if name == "default" else root / name


def saved_keys(folder: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(folder / "adapter_model.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)


def peft_train(case: Case, folder: Path, **save_kwargs: Any) -> dict[str, torch.Tensor]:
    """Build case.adapters with PEFT, randomize them, save them; the logits of each adapter."""
    model = None
    for i, (name, kwargs) in enumerate(case.adapters.items()):
        cfg = peft.LoraConfig(**copy.deepcopy(kwargs))
        if model is None:
            model = peft.get_peft_model(fresh_base(case.model), cfg, adapter_name=name)
        else:
            model.add_adapter(name, cfg)
        model.set_adapter(name)
        randomize_trainable(model, seed=10 + i)
    assert model is not None
    refs = {}
    for name in case.adapters:
        model.set_adapter(name)
        refs[name] = logits(model, case.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT's notes about embeddings and tied weights
        model.save_pretrained(folder, **save_kwargs)
    return refs


def dt_train(case: Case, folder: Path) -> dict[str, torch.Tensor]:
    """The same as peft_train, with deltatune."""
    model = None
    for i, (name, kwargs) in enumerate(case.adapters.items()):
        cfg = dt.LoraConfig(**copy.deepcopy(kwargs))
        if model is None:
            model = dt.wrap(fresh_base(case.model), cfg, adapter_name=name)
        else:
            model.add_adapter(name, cfg)
        model.set_adapter(name)
        randomize_trainable(model, seed=20 + i)
    assert model is not None
    refs = {}
    for name in case.adapters:
        model.set_adapter(name)
        refs[name] = logits(model, case.model)
    model.save_pretrained(folder)
    return refs


def check_outputs(model: Any, case: Case, refs: dict[str, torch.Tensor], base_out: torch.Tensor) -> None:
    for name, ref in refs.items():
        assert not torch.allclose(ref, base_out, atol=1e-3), f"adapter {name!r} does not change the output"
        model.set_adapter(name)
        torch.testing.assert_close(
            logits(model, case.model), ref, atol=ATOL, rtol=0, msg=lambda m, name=name: f"{name}: {m}"
        )


# ------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_peft_to_deltatune(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    base_out = logits(fresh_base(case.model), case.model)
    refs = peft_train(case, tmp_path)
    first, *others = case.adapters
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = dt.DeltaModel.from_pretrained(
            fresh_base(case.model), tmp_path, adapter_name=first, subfolder=subfolder(first)
        )
        for name in others:
            model.load_adapter(tmp_path, adapter_name=name, subfolder=subfolder(name))
    # A config written by this PEFT version holds no key that deltatune does not know.
    assert not [w for w in caught if "unknown" in str(w.message).lower()], [str(w.message) for w in caught]
    assert model.active_adapters == [first]
    check_outputs(model, case, refs, base_out)
    # Every adapter of a folder also loads on its own, from its subfolder.
    for name in others:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            alone = dt.DeltaModel.from_pretrained(fresh_base(case.model), tmp_path, adapter_name=name, subfolder=name)
        torch.testing.assert_close(logits(alone, case.model), refs[name], atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_deltatune_to_peft(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    base_out = logits(fresh_base(case.model), case.model)
    refs = dt_train(case, tmp_path)
    for name, kwargs in case.adapters.items():
        folder = folder_of(tmp_path, name)
        assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [
            "README.md",
            "adapter_config.json",
            "adapter_model.safetensors",
        ]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # PEFT reads our config without complaint
            config = peft.PeftConfig.from_pretrained(str(folder))
        assert isinstance(config, peft.LoraConfig)
        assert config.peft_type == peft.PeftType.LORA
        assert config.inference_mode is True
        for key, value in kwargs.items():
            got = getattr(config, key)
            if isinstance(value, list):  # PEFT keeps module lists as sets
                got, value = sorted(got), sorted(value)
            if key == "target_modules" and value == "all-linear":
                continue  # written as the list of what it selected; the key test proves it is the same
            assert got == value, key
    first, *others = case.adapters
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.PeftModel.from_pretrained(
            fresh_base(case.model), str(tmp_path), adapter_name=first, subfolder=subfolder(first)
        )
        for name in others:
            model.load_adapter(str(tmp_path), adapter_name=name, subfolder=subfolder(name))
    check_outputs(model, case, refs, base_out)


def _peft_quirks(kwargs: dict[str, Any], keys: set[str]) -> set[str]:
    """Keys PEFT writes that deltatune deliberately does not (it loads them fine).

    - bias="all" with a module trained in full: PEFT saves every "*.bias" of its state dict, so
      also the untouched ``<m>.original_module.bias`` and a second copy ``<m>.modules_to_save.bias``.
    - bias="lora_only" with several adapters: PEFT saves the biases of every LoRA layer of the
      model, also of layers that only another adapter adapts.
    """
    bias = kwargs.get("bias", "none")
    if bias == "all":
        return {k for k in keys if k.endswith((".original_module.bias", ".modules_to_save.bias"))}
    if bias == "lora_only":
        adapted = {k.rsplit(".lora_", 1)[0] for k in keys if ".lora_" in k}
        return {k for k in keys if k.endswith(".base_layer.bias") and k[: -len(".base_layer.bias")] not in adapted}
    return set()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_same_files_and_keys(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A PEFT save and a deltatune save of the same configuration hold the same tensors.

    PEFT's save_embedding_layers="auto" also saves the full base embedding matrices when an
    embedding is adapted; deltatune saves only the adapter, so PEFT saves without them here.
    """
    peft_train(case, tmp_path / "peft", save_embedding_layers=False)
    dt_train(case, tmp_path / "dt")
    names = {n for n, _ in fresh_base(case.model).named_modules()}
    for name, kwargs in case.adapters.items():
        ours = saved_keys(folder_of(tmp_path / "dt", name))
        theirs = saved_keys(folder_of(tmp_path / "peft", name))
        quirks = _peft_quirks(kwargs, set(theirs))
        assert sorted(ours) == sorted(set(theirs) - quirks)
        assert ours == {k: v for k, v in theirs.items() if k not in quirks}  # and the same shapes
        ours_cfg = json.loads((folder_of(tmp_path / "dt", name) / "adapter_config.json").read_text())
        theirs_cfg = json.loads((folder_of(tmp_path / "peft", name) / "adapter_config.json").read_text())
        for key in ("peft_type", "r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern", "bias", "task_type"):
            assert ours_cfg[key] == theirs_cfg[key], key
        if kwargs.get("target_modules") != "all-linear":
            as_set = lambda v: sorted(v) if isinstance(v, list) else v  # noqa: E731
            assert as_set(ours_cfg["target_modules"]) == as_set(theirs_cfg["target_modules"])
        # PEFT lists both head names for classification; compare the entries that name a module.
        real = lambda v: {m for m in v or [] if any(n.endswith(m) for n in names)}  # noqa: E731
        assert real(ours_cfg["modules_to_save"]) == real(theirs_cfg["modules_to_save"])


CASES_BY_ID = {c.id: c for c in CASES}


@pytest.mark.parametrize("case_id", ["llama-qv", "bert-seq-cls"])
def test_peft_pickle_checkpoint_loads(case_id: str, tmp_path: Path) -> None:
    """PEFT's legacy adapter_model.bin (safe_serialization=False) loads with weights_only=True."""
    case = CASES_BY_ID[case_id]
    refs = peft_train(case, tmp_path, safe_serialization=False)
    assert (tmp_path / "adapter_model.bin").is_file() and not (tmp_path / "adapter_model.safetensors").exists()
    model = dt.DeltaModel.from_pretrained(fresh_base(case.model), tmp_path)
    torch.testing.assert_close(logits(model, case.model), refs["default"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("case_id", ["llama-qv", "gpt2-conv1d"])
def test_peft_saved_embedding_layers_load(case_id: str, tmp_path: Path) -> None:
    """save_embedding_layers=True adds the full input and output embeddings; on GPT-2 they are
    one tied tensor saved under two names ("transformer.wte.weight" and "lm_head.weight")."""
    case = CASES_BY_ID[case_id]
    refs = peft_train(case, tmp_path, save_embedding_layers=True)
    assert "base_model.model.lm_head.weight" in saved_keys(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "The checkpoint also sets 2 base-model tensors"
        model = dt.DeltaModel.from_pretrained(fresh_base(case.model), tmp_path)
    torch.testing.assert_close(logits(model, case.model), refs["default"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("case_id", ["llama-qv", "bert-seq-cls", "gpt2-conv1d"])
def test_transformers_load_adapter(case_id: str, tmp_path: Path) -> None:
    """transformers' own PeftAdapterMixin.load_adapter reads deltatune's folder."""
    case = CASES_BY_ID[case_id]
    refs = dt_train(case, tmp_path)
    base = fresh_base(case.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base.load_adapter(str(tmp_path))
    torch.testing.assert_close(logits(base, case.model), refs["default"], atol=ATOL, rtol=0)


def test_peft_reads_config_without_warnings(tmp_path: Path) -> None:
    model = dt.wrap(fresh_base("llama"), dt.LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        peft.PeftConfig.from_pretrained(str(tmp_path))
