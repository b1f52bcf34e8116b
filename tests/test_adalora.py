"""AdaLoRA: config checks, the SVD-form update, the rank allocator (parity with PEFT step by step),
checkpoints after allocation both ways with PEFT 0.21, the orthogonality loss and a Trainer run.

PEFT is imported only here, as the reference.
"""

from __future__ import annotations

import contextlib
import copy
import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from tests.models import MLP, ConvModel, GPT2Conv1DModel, SeededBases, outputs

import deltatune as dt
from deltatune.methods.adalora import allocator
from deltatune.methods.adalora.adapter import SvdAdapter

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

ATOL = 1e-5
VOCAB = 64


# ------------------------------------------------------------------------------------ models
def tiny_llama() -> torch.nn.Module:
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return transformers.LlamaForCausalLM(cfg)


def tiny_gpt2() -> torch.nn.Module:
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(cfg)


MODELS: dict[str, tuple[Callable[[], torch.nn.Module], list[str]]] = {
    "mlp": (MLP, ["lin0", "lin1"]),
    "conv2d": (lambda: ConvModel(2), ["conv0", "conv1"]),
    "gpt2_conv1d": (GPT2Conv1DModel, ["c_fc", "c_proj"]),
    "gpt2": (tiny_gpt2, ["c_attn", "c_fc", "c_proj"]),
    "llama": (tiny_llama, ["q_proj", "v_proj", "down_proj"]),
}
fresh = SeededBases({kind: build for kind, (build, _) in MODELS.items()})


def inputs(kind: str, batch: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind in ("llama", "gpt2"):
        return torch.randint(1, VOCAB, (batch, 7), generator=g)
    shape = {"mlp": (10,), "conv2d": (3, 8, 8), "gpt2_conv1d": (5, 10)}[kind]
    return torch.randn(batch, *shape, generator=g)


def run(model: torch.nn.Module, kind: str, x: torch.Tensor | None = None) -> torch.Tensor:
    return outputs(model, inputs(kind) if x is None else x)


def kwargs(kind: str, **extra: Any) -> dict[str, Any]:
    return dict(target_modules=MODELS[kind][1], init_r=4, target_r=2, total_step=20, lora_alpha=6, **extra)


def randomize(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.3)


def saved_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(folder / "adapter_model.safetensors", framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ------------------------------------------------------------------------------------ config
def test_total_step_is_required() -> None:
    with pytest.raises(dt.ConfigError, match="total_step"):
        dt.AdaLoraConfig(target_modules=["q"])
    with pytest.raises(dt.ConfigError, match="total_step"):
        dt.AdaLoraConfig(target_modules=["q"], total_step=0)


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(tinit=5, tfinal=5), "no budget phase"),
        (dict(tinit=10), "no budget phase"),
        (dict(target_r=13), "target_r"),
        (dict(init_r=0), "init_r"),
        (dict(deltaT=0), "deltaT"),
        (dict(tinit=-1), "tinit"),
        (dict(beta1=1.0), "beta1"),
        (dict(beta2=0.0), "beta2"),
        (dict(orth_reg_weight=-0.1), "orth_reg_weight"),
        (dict(lora_dropout=1.0), "lora_dropout"),
        (dict(bias="adalora_only"), "bias"),
        (dict(init_lora_weights="gaussian"), "init_lora_weights"),
        (dict(rank_pattern={"q.lora_E": [1, 0]}), "list of init_r booleans"),
        (dict(rank_pattern={"q.lora_E": [True, False]}), "init_r=12"),
        (dict(target_modules=".*q", layers_to_transform=[0]), "regex"),
    ],
)
def test_impossible_configs_raise(bad: dict[str, Any], match: str) -> None:
    values = {"target_modules": ["q"], "total_step": 10, **bad}
    with pytest.raises(dt.ConfigError, match=match):
        dt.AdaLoraConfig(**values)


def test_peft_fields_round_trip_and_unsupported_ones_raise() -> None:
    config = dt.AdaLoraConfig(target_modules=["q"], total_step=10, tinit=2, tfinal=3, deltaT=2, beta1=0.7)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["peft_type"] == "ADALORA"
    assert dt.AdapterConfig.from_dict(data) == config
    with pytest.raises(dt.ConfigError, match="use_dora"):
        dt.AdapterConfig.from_dict({**data, "use_dora": True})
    with pytest.warns(UserWarning, match="ignores"):
        dt.AdaLoraConfig(target_modules=["q"], total_step=10, r=16)


# ------------------------------------------------------------------------------------ layers
def test_update_rule_and_shapes() -> None:
    model = dt.wrap(fresh("mlp"), dt.AdaLoraConfig(**kwargs("mlp"), init_lora_weights=False)).eval()
    layer = dict(model.adapted_layers())["lin0"]
    adapter = layer.adapters["default"]
    assert isinstance(adapter, SvdAdapter)
    assert adapter.lora_A.shape == (4, 10) and adapter.lora_E.shape == (4, 1) and adapter.lora_B.shape == (20, 4)
    expected = adapter.lora_B @ (adapter.lora_A * adapter.lora_E) * 6 / (4 + 1e-5)
    torch.testing.assert_close(adapter.delta_weight(), expected)
    x = torch.randn(3, 10)
    torch.testing.assert_close(layer(x), layer.base_layer(x) + x @ expected.T, atol=1e-5, rtol=1e-5)
    fresh_adapter = dt.wrap(fresh("mlp"), dt.AdaLoraConfig(**kwargs("mlp"))).model.lin0.adapters["default"]
    assert torch.all(fresh_adapter.lora_E == 0) and 0.01 < float(fresh_adapter.lora_A.std()) < 0.04
    assert set(fresh_adapter.state_dict()) == {"lora_A", "lora_E", "lora_B"}  # ranknum is not saved (PEFT 0.21)


@pytest.mark.parametrize(
    "build,target",
    [
        (lambda: torch.nn.Sequential(torch.nn.Embedding(10, 4)), "0"),
        (lambda: torch.nn.Sequential(torch.nn.Conv1d(3, 4, 2)), "0"),
        (lambda: torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, groups=2)), "0"),
    ],
    ids=["embedding", "conv1d", "grouped-conv2d"],
)
def test_unsupported_layers_raise(build: Callable[[], torch.nn.Module], target: str) -> None:
    with pytest.raises(dt.UnsupportedLayerError, match="AdaLoRA"):
        dt.wrap(build(), dt.AdaLoraConfig(target_modules=[target], total_step=10))


def test_mixed_batches_are_refused() -> None:
    model = dt.wrap(fresh("mlp"), dt.AdaLoraConfig(**kwargs("mlp")))
    with pytest.raises(dt.DeltatuneError, match="mixed batch"):
        model(torch.randn(2, 10), adapter_names=["default", dt.BASE])


def test_default_targets_follow_peft_table() -> None:
    model = dt.wrap(fresh("llama"), dt.AdaLoraConfig(total_step=10))
    assert sorted(model.peft_config["default"].target_modules) == ["q_proj", "v_proj"]


# ------------------------------------------------------------------------------------ interop
INTEROP = [
    ("mlp", {}),
    ("conv2d", {}),
    ("gpt2", {"fan_in_fan_out": True}),
    ("llama", {}),
    ("llama", {"layers_to_transform": [1], "layers_pattern": "layers", "init_r": 3, "lora_alpha": 2}),
]


@pytest.mark.parametrize("kind,extra", INTEROP, ids=["mlp", "conv2d", "gpt2", "llama", "llama-layer1"])
def test_peft_checkpoint_loads_in_deltatune_and_back(kind: str, extra: dict[str, Any], tmp_path: Path) -> None:
    options = {**kwargs(kind), "lora_dropout": 0.1, **extra}
    with quiet():
        theirs = peft.get_peft_model(fresh(kind), peft.AdaLoraConfig(**options))
    randomize(theirs, seed=3)
    theirs.save_pretrained(tmp_path / "peft")
    ref = run(theirs, kind)
    assert not torch.allclose(ref, run(fresh(kind), kind), atol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unknown-key warning for PEFT's adapter_config.json
        ours = dt.DeltaModel.from_pretrained(fresh(kind), tmp_path / "peft")
    torch.testing.assert_close(run(ours, kind), ref, atol=ATOL, rtol=0)
    ours.merge_adapter()
    torch.testing.assert_close(run(ours, kind), ref, atol=ATOL, rtol=1e-5)
    ours.unmerge_adapter()

    mine = dt.wrap(fresh(kind), dt.AdaLoraConfig(**options))
    randomize(mine, seed=4)
    mine.save_pretrained(tmp_path / "ours")
    assert saved_shapes(tmp_path / "ours") == saved_shapes(tmp_path / "peft")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        peft.PeftConfig.from_pretrained(tmp_path / "ours")
    with quiet():
        back = peft.PeftModel.from_pretrained(fresh(kind), tmp_path / "ours")
    torch.testing.assert_close(run(back, kind), run(mine, kind), atol=ATOL, rtol=0)


def test_config_with_rank_pattern_builds_pruned_layers(tmp_path: Path) -> None:
    from tests.method_cases import adalora

    config = adalora(MODELS["mlp"][1], identity=False, variant=2)  # lin0 keeps ranks 0 and 2 of 3
    model = dt.wrap(fresh("mlp"), config)
    adapter = model.model.lin0.adapters["default"]
    assert adapter.r == 2 and adapter.kept == (0, 2) and adapter.ranknum == 3.0
    assert model.model.lin1.adapters["default"].r == 3
    model.save_pretrained(tmp_path)
    assert saved_shapes(tmp_path)["base_model.model.lin0.lora_A"] == (2, 10)
    with quiet():
        back = peft.PeftModel.from_pretrained(fresh("mlp"), tmp_path)
    torch.testing.assert_close(run(back, "mlp"), run(model, "mlp"), atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------ allocator
def llama_batch(step: int) -> torch.Tensor:
    return torch.randint(1, VOCAB, (2, 9), generator=torch.Generator().manual_seed(100 + step))


SCHEDULE = dict(
    target_modules=["q_proj", "v_proj"],
    init_r=6,
    target_r=2,
    tinit=2,
    tfinal=3,
    deltaT=2,
    total_step=12,
    lora_alpha=8,
    task_type="CAUSAL_LM",  # PEFT adds the orthogonality term only in its task-specific models
)


def _peft_trained(steps: int, folder: Path | None = None) -> tuple[Any, list[float], list[dict]]:
    """A PEFT AdaLoRA model trained ``steps`` steps with SGD; its losses and rank patterns per step."""
    with quiet():
        model = peft.get_peft_model(fresh("llama"), peft.AdaLoraConfig(**SCHEDULE))
    with torch.no_grad():  # non-zero Λ, so every factor has gradients from the first step
        for name, param in model.named_parameters():
            if "lora_E" in name:
                param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(7)) * 0.5)
    if folder is not None:
        model.save_pretrained(folder)  # the starting point, for deltatune to start from the same weights
        model.peft_config["default"].inference_mode = False
    return model, *_train(model, steps, lambda m, s: m.base_model.update_and_allocate(s), peft_keys=True)


def _train(model: Any, steps: int, allocate: Callable, peft_keys: bool = False) -> tuple[list[float], list[dict]]:
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    losses, patterns = [], []
    for step in range(steps):
        ids = llama_batch(step)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        allocate(model, step)
        optimizer.zero_grad()
        losses.append(float(loss))
        pattern = model.peft_config["default"].rank_pattern
        if pattern is not None and peft_keys:
            pattern = {k.replace(".default", ""): v for k, v in pattern.items()}
        patterns.append(copy.deepcopy(pattern))
    return losses, patterns


def test_allocator_matches_peft_step_by_step(tmp_path: Path) -> None:
    steps = 12
    theirs, their_losses, their_patterns = _peft_trained(steps, tmp_path / "start")
    ours = dt.DeltaModel.from_pretrained(fresh("llama"), tmp_path / "start", is_trainable=True)
    our_losses, our_patterns = _train(ours, steps, lambda m, s: m.on_optimizer_step(s))
    assert our_losses == pytest.approx(their_losses, rel=1e-5)  # the orthogonality term included
    assert our_patterns == their_patterns
    assert our_patterns[1] is None and our_patterns[2] is None  # warm-up: no allocation up to tinit
    final = our_patterns[-1]
    assert sum(sum(mask) for mask in final.values()) == 2 * 4  # target_r per layer on average
    assert len({sum(mask) for mask in final.values()}) > 1, "ranks are allocated unevenly"
    theirs_state = {k.replace(".default", ""): v for k, v in theirs.named_parameters() if "lora_" in k}
    for path, adapter in ours.adapter_modules("default"):
        for name in ("lora_A", "lora_E", "lora_B"):
            their = theirs_state[f"base_model.model.{path}.{name}"]
            torch.testing.assert_close(getattr(adapter, name), their, atol=1e-4, rtol=1e-4)
        keep = torch.tensor(final[f"{path}.lora_E"])
        assert torch.all(adapter.lora_E[~keep] == 0), "pruned ranks stay at zero after the final allocation"


def test_allocated_checkpoints_load_both_ways(tmp_path: Path) -> None:
    # PEFT trained past the final allocation -> deltatune
    theirs, _, patterns = _peft_trained(10)
    theirs.save_pretrained(tmp_path / "peft")
    saved = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert saved["rank_pattern"] == patterns[-1]
    shapes = saved_shapes(tmp_path / "peft")
    ours = dt.DeltaModel.from_pretrained(fresh("llama"), tmp_path / "peft")
    torch.testing.assert_close(run(ours, "llama"), run(theirs, "llama"), atol=ATOL, rtol=0)
    # deltatune trained -> its checkpoint has PEFT's shapes and loads in PEFT
    mine = dt.wrap(fresh("llama"), dt.AdaLoraConfig(**SCHEDULE, init_lora_weights=False))
    _train(mine, 10, lambda m, s: m.on_optimizer_step(s))
    mine.save_pretrained(tmp_path / "ours")
    assert saved_shapes(tmp_path / "ours").keys() == shapes.keys()
    mask = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())["rank_pattern"]
    for path, _ in mine.adapter_modules("default"):
        kept = sum(mask[f"{path}.lora_E"])
        assert saved_shapes(tmp_path / "ours")[f"base_model.model.{path}.lora_A"][0] == kept
    with quiet():
        back = peft.PeftModel.from_pretrained(fresh("llama"), tmp_path / "ours")
    torch.testing.assert_close(run(back, "llama"), run(mine, "llama"), atol=ATOL, rtol=0)
    reloaded = dt.DeltaModel.from_pretrained(fresh("llama"), tmp_path / "ours")
    # not bit-exact: the saved adapter has fewer ranks, so its GEMMs sum differently
    torch.testing.assert_close(run(reloaded, "llama"), run(mine, "llama"), atol=ATOL, rtol=0)
    # a loaded, pruned adapter trains on: its rank pattern keeps init_r flags per layer
    again = dt.DeltaModel.from_pretrained(fresh("llama"), tmp_path / "ours", is_trainable=True)
    _train(again, 3, lambda m, s: m.on_optimizer_step(s + 10))
    assert again.peft_config["default"].rank_pattern == mask


def test_hook_needs_gradients() -> None:
    model = dt.wrap(fresh("llama"), dt.AdaLoraConfig(**SCHEDULE))
    with pytest.raises(dt.DeltatuneError, match="before optimizer.zero_grad"):
        model.on_optimizer_step(0)
    frozen = dt.wrap(fresh("llama"), dt.AdaLoraConfig(**SCHEDULE, inference_mode=True))
    frozen.on_optimizer_step(0)  # frozen adapters have no per-step work


def test_orthogonality_loss_only_in_training() -> None:
    model = dt.wrap(fresh("llama"), dt.AdaLoraConfig(**SCHEDULE, orth_reg_weight=0.3))
    ids = llama_batch(0)
    model.eval()
    with torch.no_grad():
        plain = float(model(input_ids=ids, labels=ids).loss)
    model.train()
    with torch.no_grad():
        trained = float(model(input_ids=ids, labels=ids).loss)
        penalty = model.training_loss()
        assert penalty is not None
        torch.testing.assert_close(penalty, allocator.orthogonality_loss(model, "default"))
        with model.disable_adapters():
            disabled = model(input_ids=ids, labels=ids).loss
    assert trained == pytest.approx(plain + float(penalty), rel=1e-6)
    assert float(penalty) > 0.1  # Q, P ~ N(0, 0.02^2) are far from orthonormal
    assert float(disabled) == pytest.approx(plain, rel=1e-6)  # Λ = 0: the base model, and no penalty


def test_trainer_callback_shrinks_ranks_to_the_budget(tmp_path: Path) -> None:
    from deltatune.integrations.trainer_hooks import DeltaTuneCallback

    steps = 8
    config = dt.AdaLoraConfig(**{**SCHEDULE, "tinit": 1, "tfinal": 2, "deltaT": 1, "total_step": steps})
    model = dt.wrap(fresh("llama"), config)
    with torch.no_grad():
        for _, adapter in model.adapter_modules("default"):
            adapter.lora_E.normal_()
    data = [{"input_ids": llama_batch(i)[0], "labels": llama_batch(i)[0]} for i in range(steps * 2)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        remove_unused_columns=False,
        use_cpu=True,
        disable_tqdm=True,
    )
    with quiet():
        trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[DeltaTuneCallback()])
        trainer.train()
    pattern = model.peft_config["default"].rank_pattern
    assert pattern is not None and len(pattern) == 4
    assert sum(sum(mask) for mask in pattern.values()) == config.target_r * 4
    for path, adapter in model.adapter_modules("default"):
        pruned = ~torch.tensor(pattern[f"{path}.lora_E"])
        assert torch.all(adapter.lora_E[pruned] == 0)
    model.save_pretrained(tmp_path / "adapter")
    ranks = [shape[0] for key, shape in saved_shapes(tmp_path / "adapter").items() if key.endswith("lora_E")]
    assert sum(ranks) == config.target_r * 4
