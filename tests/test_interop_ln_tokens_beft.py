"""LN tuning, trainable tokens and bias tuning (BEFT): interop with PEFT both ways, and behaviour.

Interop cases build one seeded tiny model, give every adapter tensor random values (so a broken
load cannot pass), save with one library and load with the other on a fresh copy of the base:
the logits must agree (atol 1e-5), both saves must hold the same safetensors keys and shapes,
and each library must read the other's adapter_config.json without warnings. PEFT is imported
only here, as the reference.
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
from torch import nn

import deltatune as dt

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
from safetensors import safe_open  # noqa: E402

ATOL = 1e-5
VOCAB = 64
TOKENS = [1, 5, 7, 60]


# ------------------------------------------------------------------------------------ models
def _quiet(build: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build().eval()


def _llama(tied: bool) -> nn.Module:
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
    )
    return _quiet(lambda: transformers.LlamaForCausalLM(cfg))


def _bert() -> nn.Module:
    cfg = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        num_labels=3,
    )
    return _quiet(lambda: transformers.BertForSequenceClassification(cfg))


def _gpt2() -> nn.Module:
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    return _quiet(lambda: transformers.GPT2LMHeadModel(cfg))


def _t5() -> nn.Module:
    cfg = transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=1, num_heads=4, decoder_start_token_id=0
    )
    return _quiet(lambda: transformers.T5ForConditionalGeneration(cfg))


MODELS: dict[str, Callable[[], nn.Module]] = {
    "llama": lambda: _llama(False),
    "llama_tied": lambda: _llama(True),
    "bert": _bert,
    "gpt2": _gpt2,
    "t5": _t5,
}
_BASES: dict[str, nn.Module] = {}


def fresh(kind: str) -> nn.Module:
    if kind not in _BASES:
        _BASES[kind] = MODELS[kind]()
    return copy.deepcopy(_BASES[kind])


def inputs(kind: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, VOCAB, (2, 8), generator=g)
    ids[:, : len(TOKENS)] = torch.tensor(TOKENS)  # the trained tokens appear in the batch
    if kind == "bert":
        mask = torch.ones_like(ids)
        mask[1, -2:] = 0
        return {"input_ids": ids, "attention_mask": mask}
    if kind == "t5":
        return {"input_ids": ids, "decoder_input_ids": ids[:, :5]}
    return {"input_ids": ids}


def logits(model: nn.Module, kind: str) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**inputs(kind)).logits


def randomize(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=g) * 0.3 + (1.0 if param.dim() == 1 else 0.0))


def saved_keys(folder: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(folder / "adapter_model.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118


# ------------------------------------------------------------------------------------ cases
CONFIGS = {"ln": "LNTuningConfig", "tt": "TrainableTokensConfig", "beft": "BeftConfig"}  # the same in both


@dataclasses.dataclass
class Case:
    id: str  # "<method>-...", the method as in CONFIGS
    model: str
    kwargs: dict[str, Any]
    peft_to_dt_only: bool = False  # deltatune's default differs from PEFT's for this config

    @property
    def config(self) -> str:
        return CONFIGS[self.id.split("-")[0]]


TIED = dict(token_indices=[5, 2], target_modules=["embed_tokens"])
CASES = [
    Case("ln-llama-default", "llama", {}),
    Case(
        "ln-llama-exclude",
        "llama",
        dict(target_modules=["input_layernorm", "norm"], exclude_modules=["0.input_layernorm"]),
    ),
    Case("ln-bert-seq-cls", "bert", dict(target_modules=["LayerNorm"], task_type="SEQ_CLS")),
    Case("ln-gpt2-default", "gpt2", {}),
    Case("ln-t5-default", "t5", {}),
    Case("tt-llama-default", "llama", dict(token_indices=TOKENS)),
    Case("tt-llama-tied", "llama_tied", dict(token_indices=TOKENS)),
    Case("tt-llama-tied-explicit", "llama_tied", TIED),
    Case("tt-gpt2-tied", "gpt2", dict(token_indices=TOKENS, target_modules=["wte"])),
    Case("tt-bert-words", "bert", dict(token_indices=TOKENS, target_modules=["word_embeddings"])),
    Case("beft-bert-peft-default", "bert", dict(task_type="SEQ_CLS"), peft_to_dt_only=True),
    Case("beft-bert-linears", "bert", dict(target_modules=["query", "value", "dense"], task_type="SEQ_CLS")),
    Case("beft-llama-no-bias", "llama", dict(target_modules=["v_proj", "down_proj"])),
    Case("beft-t5-regex", "t5", dict(target_modules=r".*\.(q|v)")),
]


def build(lib: Any, case: Case, seed: int) -> tuple[nn.Module, torch.Tensor]:
    """A model with the case's adapter made by ``lib`` (peft or dt), random weights, its logits."""
    config = getattr(lib, case.config)(**copy.deepcopy(case.kwargs))
    base = fresh(case.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(base, config) if lib is peft else dt.wrap(base, config)
    randomize(model, seed)
    return model, logits(model, case.model)


def save(model: nn.Module, folder: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT's notes about tied embeddings
        model.save_pretrained(str(folder))


# ------------------------------------------------------------------------------------ interop
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_peft_to_deltatune(case: Case, tmp_path: Path) -> None:
    model, ref = build(peft, case, seed=10)
    assert not torch.allclose(ref, logits(fresh(case.model), case.model), atol=1e-3)
    save(model, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = dt.DeltaModel.from_pretrained(fresh(case.model), tmp_path)
    assert not [w for w in caught if "unknown" in str(w.message).lower()], [str(w.message) for w in caught]
    torch.testing.assert_close(logits(ours, case.model), ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", [c for c in CASES if not c.peft_to_dt_only], ids=lambda c: c.id)
def test_deltatune_to_peft(case: Case, tmp_path: Path) -> None:
    model, ref = build(dt, case, seed=20)
    assert not torch.allclose(ref, logits(fresh(case.model), case.model), atol=1e-3)
    model.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PEFT reads our config without complaint
        config = peft.PeftConfig.from_pretrained(str(tmp_path))
    assert type(config).__name__ == case.config and config.inference_mode is True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.PeftModel.from_pretrained(fresh(case.model), str(tmp_path))
    torch.testing.assert_close(logits(theirs, case.model), ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", [c for c in CASES if not c.peft_to_dt_only], ids=lambda c: c.id)
def test_same_keys_and_config_as_peft(case: Case, tmp_path: Path) -> None:
    ours, _ = build(dt, case, seed=1)
    theirs, _ = build(peft, case, seed=1)
    save(ours, tmp_path / "ours")
    save(theirs, tmp_path / "theirs")
    assert saved_keys(tmp_path / "ours") == saved_keys(tmp_path / "theirs")
    ours_cfg = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    theirs_cfg = json.loads((tmp_path / "theirs" / "adapter_config.json").read_text())
    assert set(ours_cfg) <= set(theirs_cfg), "a key PEFT does not write"
    for key in set(ours_cfg) & set(theirs_cfg) - {"target_modules", "modules_to_save", "auto_mapping"}:
        assert ours_cfg[key] == theirs_cfg[key], key


@pytest.mark.parametrize("case_id", ["ln-bert-seq-cls", "tt-llama-tied", "tt-bert-words", "beft-bert-linears"])
def test_merge_and_unload_matches_peft(case_id: str, tmp_path: Path) -> None:
    """Both libraries merge the same adapter into the same plain model."""
    case = next(c for c in CASES if c.id == case_id)
    ours, ref = build(dt, case, seed=3)
    ours.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.PeftModel.from_pretrained(fresh(case.model), str(tmp_path))
        plain_theirs = theirs.merge_and_unload()
    plain_ours = ours.merge_and_unload()
    torch.testing.assert_close(logits(plain_ours, case.model), ref, atol=ATOL, rtol=0)
    mine, theirs_state = plain_ours.state_dict(), plain_theirs.state_dict()
    # PEFT's LN tuning leaves its wrapper around modules_to_save ("classifier.original_module...").
    shared = set(mine) & set(theirs_state)
    assert len(shared) >= len(mine) - 2
    for key in shared:
        torch.testing.assert_close(mine[key], theirs_state[key], atol=1e-6, rtol=0, msg=key)


# ------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize(
    "make",
    [
        lambda: dt.TrainableTokensConfig(),  # no token_indices
        lambda: dt.TrainableTokensConfig(token_indices=[1, -2]),
        lambda: dt.TrainableTokensConfig(token_indices=[3, 4, 3]),
        lambda: dt.TrainableTokensConfig(token_indices=[1.5]),
        lambda: dt.TrainableTokensConfig(token_indices=[1], init_weights="yes"),
        lambda: dt.BeftConfig(init_weights=0),
        lambda: dt.LNTuningConfig(layers_pattern="layers"),  # layers_pattern without layers_to_transform
    ],
    ids=["tt-empty", "tt-negative", "tt-duplicate", "tt-float", "tt-init", "beft-init", "ln-pattern"],
)
def test_impossible_configs_raise(make: Callable[[], dt.AdapterConfig]) -> None:
    with pytest.raises(dt.ConfigError):
        make()


@pytest.mark.parametrize(
    "config",
    [dt.LNTuningConfig(target_modules=["norm"]), dt.TrainableTokensConfig(token_indices=[2]), dt.BeftConfig()],
    ids=lambda c: c.peft_type,
)
def test_config_json_round_trip_without_deltatune_only_keys(config: dt.AdapterConfig) -> None:
    data = config.to_dict()
    assert not {"layers_to_transform", "layers_pattern"} & set(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dt.AdapterConfig.from_dict(json.loads(json.dumps(data))) == config


# ------------------------------------------------------------------------------------ layers
class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.lin = nn.Linear(8, 8)
        self.ln = nn.LayerNorm(8)
        self.free = nn.Linear(8, 6, bias=False)
        self.gn = nn.GroupNorm(2, 6)
        self.conv = nn.Conv1d(6, 4, 1)
        self.act = nn.ReLU()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.free(self.ln(self.lin(self.emb(ids))))  # (b, l, 6)
        h = self.gn(h.transpose(1, 2))  # (b, 6, l)
        return self.conv(self.act(h))


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return Tiny().eval()


IDS = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 19]])


@pytest.mark.parametrize(
    "config,match",
    [
        (dt.LNTuningConfig(target_modules=["lin"]), "LN tuning cannot adapt lin.*Linear.*exclude_modules"),
        (dt.TrainableTokensConfig(target_modules=["conv"], token_indices=[1]), "cannot adapt conv.*Conv1d"),
        (dt.TrainableTokensConfig(target_modules=["emb"], token_indices=[20]), r"\[20\] are out of range for emb"),
        (dt.BeftConfig(target_modules=["emb"]), "Bias tuning cannot adapt emb.*Embedding"),
        (dt.BeftConfig(target_modules=["act"]), "Bias tuning cannot adapt act.*ReLU"),
    ],
)
def test_unsupported_layers_raise_and_leave_model_unchanged(config: dt.AdapterConfig, match: str) -> None:
    model = _tiny()
    before = [type(m).__name__ for m in model.modules()]
    with pytest.raises(dt.UnsupportedLayerError, match=match):
        dt.wrap(model, config)
    assert [type(m).__name__ for m in model.modules()] == before


def test_max_norm_embedding_is_refused() -> None:
    model = _tiny()
    model.emb = nn.Embedding(20, 8, max_norm=1.0)
    with pytest.raises(dt.UnsupportedLayerError, match="max_norm"):
        dt.wrap(model, dt.TrainableTokensConfig(target_modules=["emb"], token_indices=[1]))


@pytest.mark.parametrize(
    "config",
    [
        dt.LNTuningConfig(target_modules=["ln"]),
        dt.TrainableTokensConfig(target_modules=["emb"], token_indices=[1, 2]),
        dt.BeftConfig(target_modules=["lin"]),
    ],
    ids=lambda c: c.peft_type,
)
def test_mixed_batches_are_refused(config: dt.AdapterConfig) -> None:
    model = dt.wrap(_tiny(), config)
    with pytest.raises(dt.DeltatuneError, match="mixed batch"):
        model(IDS, adapter_names=["default", dt.BASE])


# ------------------------------------------------------------------------------------ behaviour
def test_ln_tuning_merges_weight_and_bias_and_restores_them() -> None:
    model = dt.wrap(_tiny(), dt.LNTuningConfig(target_modules=["ln", "gn"]))
    randomize(model, 0)
    out = model(IDS)
    ln = model.model.ln
    original = {k: v.clone() for k, v in ln.base_layer.state_dict().items()}
    tuned = ln.adapters["default"].ln_tuning_layers
    model.merge_adapter()
    assert torch.equal(ln.base_layer.weight, tuned.weight) and torch.equal(ln.base_layer.bias, tuned.bias)
    torch.testing.assert_close(model(IDS), out, atol=1e-6, rtol=0)
    model.unmerge_adapter()
    for key, value in ln.base_layer.state_dict().items():
        assert torch.equal(value, original[key]), key


def test_safe_merge_refuses_non_finite_values_and_writes_nothing() -> None:
    model = dt.wrap(_tiny(), dt.LNTuningConfig(target_modules=["ln", "gn"]))
    before = {k: v.clone() for k, v in model.model.state_dict().items() if "adapters" not in k}
    with torch.no_grad():
        model.model.gn.adapters["default"].ln_tuning_layers.bias[0] = float("nan")
    with pytest.raises(dt.MergeError, match="NaN or Inf"):
        model.merge_adapter(safe_merge=True)
    after = {k: v for k, v in model.model.state_dict().items() if "adapters" not in k}
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not any(layer.merged for _, layer in model.adapted_layers())


def test_bias_tuning_on_every_layer_kind_and_no_merge_without_a_bias() -> None:
    reference = _tiny()
    model = dt.wrap(_tiny(), dt.BeftConfig(target_modules=["lin", "ln", "free", "gn", "conv"], init_weights=False))
    out = model(IDS)
    assert not torch.allclose(out, reference(IDS))
    with model.disable_adapters():
        assert torch.equal(model(IDS), reference(IDS))
    # "free" has no bias: the whole merge is refused and the layers merged before it are undone.
    with pytest.raises(dt.MergeError, match="free cannot be merged.*no bias"):
        model.merge_adapter()
    for name, param in reference.named_parameters():
        assert torch.equal(model.model.get_parameter(_wrapped_name(model, name)), param), name
    torch.testing.assert_close(model(IDS), out, atol=0, rtol=0)


def _wrapped_name(model: dt.DeltaModel, name: str) -> str:
    module, _, leaf = name.rpartition(".")
    return f"{module}.base_layer.{leaf}" if any(path == module for path, _ in model.adapted_layers()) else name


def test_bias_tuning_merges_into_the_bias_only() -> None:
    model = dt.wrap(_tiny(), dt.BeftConfig(target_modules=["lin", "ln", "gn", "conv"], init_weights=False))
    out = model(IDS)
    weights_before = {n: p.clone() for n, p in model.named_parameters() if n.endswith("weight")}
    model.merge_adapter()
    torch.testing.assert_close(model(IDS), out, atol=1e-6, rtol=0)
    assert all(torch.equal(p, weights_before[n]) for n, p in model.named_parameters() if n.endswith("weight"))
    model.unmerge_adapter()
    torch.testing.assert_close(model(IDS), out, atol=1e-6, rtol=0)


def test_bias_tuning_does_not_train_the_base_bias() -> None:
    model = dt.wrap(_tiny(), dt.BeftConfig(target_modules=["lin"]))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["model.lin.adapters.default.beft_bias"]


def test_stacked_lora_and_bias_tuning_merge_in_order_and_unmerge_exactly() -> None:
    """A layer holding a weight-merging adapter and a module-merging one (the merge hook's runs)."""
    model = dt.wrap(_tiny(), dt.LoraConfig(target_modules=["lin"], init_lora_weights=False))
    model.add_adapter("bias", dt.BeftConfig(target_modules=["lin"], init_weights=False))
    model.add_adapter("lora2", dt.LoraConfig(target_modules=["lin"], init_lora_weights=False, r=2))
    model.set_adapter(["default", "bias", "lora2"])
    base = model.model.lin.base_layer
    original = (base.weight.clone(), base.bias.clone())
    out = model(IDS)
    model.merge_adapter()
    assert model.model.lin.merged == ["default", "bias", "lora2"]
    torch.testing.assert_close(model(IDS), out, atol=1e-5, rtol=0)
    model.unmerge_adapter()
    torch.testing.assert_close(base.weight, original[0], atol=1e-6, rtol=0)
    assert torch.equal(base.bias, original[1])


def test_trainable_tokens_change_only_their_rows() -> None:
    reference = _tiny()
    model = dt.wrap(
        _tiny(), dt.TrainableTokensConfig(target_modules=["emb"], token_indices=[2, 19], init_weights=False)
    )
    emb = model.model.emb
    got = emb(IDS)
    expected = reference.emb(IDS)
    rows = emb.adapters["default"].trainable_tokens_delta
    expected[0, 1], expected[1, 3] = rows[0], rows[1]
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    got.sum().backward()
    assert emb.base_layer.weight.grad is None and rows.grad is not None


def test_trainable_tokens_follow_the_embeddings_scale() -> None:
    class Scaled(nn.Embedding):
        def __init__(self) -> None:
            super().__init__(20, 8)
            self.embed_scale = 3.0

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return super().forward(ids) * self.embed_scale

    model = _tiny()
    model.emb = Scaled()
    model = dt.wrap(model, dt.TrainableTokensConfig(target_modules=["emb"], token_indices=[2], init_weights=False))
    out = model.model.emb(IDS)
    row = model.model.emb.adapters["default"].trainable_tokens_delta[0]
    torch.testing.assert_close(out[0, 1], row * 3.0)
    model.merge_adapter()
    torch.testing.assert_close(model.model.emb(IDS), out)


def test_tied_head_shares_the_trained_rows(tmp_path: Path) -> None:
    model = dt.wrap(
        fresh("llama_tied"), dt.TrainableTokensConfig(token_indices=[5, 9], target_modules=["embed_tokens"])
    )
    emb, head = model.model.model.embed_tokens, model.model.lm_head
    rows = emb.adapters["default"].trainable_tokens_delta
    assert head.adapters["default"].trainable_tokens_delta is rows
    assert [p for p in model.parameters() if p.requires_grad] == [rows]
    with torch.no_grad():
        rows.add_(1.0)
    hidden = torch.randn(2, 32)
    torch.testing.assert_close(head(hidden)[:, [5, 9]], hidden @ rows.T)
    torch.testing.assert_close(emb(torch.tensor([9])), rows[1:2])
    assert model.peft_config["default"].to_dict()["target_modules"] == ["embed_tokens"]
    model.save_pretrained(tmp_path)
    keys = saved_keys(tmp_path)
    assert set(keys) == {
        "base_model.model.model.embed_tokens.trainable_tokens_delta",
        "base_model.model.lm_head.trainable_tokens_delta",
    }


def test_untied_head_is_left_alone() -> None:
    model = dt.wrap(fresh("llama"), dt.TrainableTokensConfig(token_indices=[5]))
    assert [path for path, _ in model.adapted_layers()] == ["model.embed_tokens"]


# ------------------------------------------------------------------------------------ defaults
@pytest.mark.parametrize(
    "kind,expected",
    [
        ("llama", {"input_layernorm", "post_attention_layernorm", "norm"}),
        ("gpt2", {"ln_1", "ln_2", "ln_f"}),
        ("t5", {"layer_norm", "final_layer_norm"}),
        ("bert", {"LayerNorm"}),
    ],
)
def test_ln_tuning_default_targets(kind: str, expected: set[str]) -> None:
    model = dt.wrap(fresh(kind), dt.LNTuningConfig())
    assert {path.rsplit(".", 1)[-1] for path, _ in model.adapted_layers()} == expected


def test_bias_tuning_default_is_every_layer_with_a_bias() -> None:
    base = fresh("bert")
    with_bias = {
        n
        for n, m in base.named_modules()
        if isinstance(getattr(m, "bias", None), nn.Parameter) and isinstance(m, (nn.Linear, nn.LayerNorm))
    }
    model = dt.wrap(base, dt.BeftConfig())
    assert {path for path, _ in model.adapted_layers()} == with_bias
    model = dt.wrap(fresh("bert"), dt.BeftConfig(task_type="SEQ_CLS"))
    assert "classifier" not in {path for path, _ in model.adapted_layers()}  # trained in full instead


def test_norms_are_recognised_by_what_they_are() -> None:
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    from transformers.models.t5.modeling_t5 import T5LayerNorm

    from deltatune.integrations.transformers import is_norm

    norms = [nn.LayerNorm(4), nn.RMSNorm(4), nn.GroupNorm(2, 4), LlamaRMSNorm(4), T5LayerNorm(4)]
    others = [nn.LayerNorm(4, elementwise_affine=False), nn.LayerNorm((2, 3)), nn.BatchNorm1d(4), nn.Linear(4, 4)]
    assert all(is_norm(m) for m in norms) and not any(is_norm(m) for m in others)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    with pytest.raises(dt.UnsupportedLayerError, match="LN tuning cannot adapt 1 .*BatchNorm1d"):
        dt.wrap(model, dt.LNTuningConfig(target_modules=["1"]))
