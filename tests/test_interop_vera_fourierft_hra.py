"""VeRA, FourierFT and HRA: interop with Hugging Face PEFT both ways, parity, and errors.

For every method and every layer type PEFT supports for it (VeRA and FourierFT: Linear and GPT-2
Conv1D; HRA: Linear and Conv2d), a PEFT adapter with random weights loads in deltatune with the
same outputs, a deltatune adapter loads in PEFT with the same outputs, and both saves hold the same
tensor keys and shapes. PEFT is imported only here, as the reference.
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
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tests.models import MLP, ConvModel, EmbeddingModel, GPT2Conv1DModel, SeededBases

import deltatune as dt

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

ATOL = 1e-5
VOCAB = 64


# ------------------------------------------------------------------------------------ models
def _seeded(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build().eval()


def tiny_llama() -> torch.nn.Module:
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        attention_bias=True,
    )
    return transformers.LlamaForCausalLM(cfg)


def tiny_gpt2() -> torch.nn.Module:
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(cfg)


MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "llama": tiny_llama,
    "gpt2": tiny_gpt2,
    "conv2d": lambda: ConvModel(2),
    "mlp": MLP,
}
fresh = SeededBases(MODELS)


def run(model: torch.nn.Module, kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    model.eval()
    with torch.no_grad():
        if kind in ("llama", "gpt2"):
            return model(input_ids=torch.randint(1, VOCAB, (2, 7), generator=g)).logits
        shape = (2, 3, 8, 8) if kind == "conv2d" else (2, 10)
        return model(torch.randn(*shape, generator=g))


# ------------------------------------------------------------------------------------ cases
@dataclasses.dataclass
class Case:
    id: str
    method: str  # "VERA", "FOURIERFT", "HRA"
    model: str
    kwargs: dict[str, Any]


PEFT_CONFIG = {"VERA": "VeraConfig", "FOURIERFT": "FourierFTConfig", "HRA": "HRAConfig"}
DT_CONFIG = {"VERA": dt.VeraConfig, "FOURIERFT": dt.FourierFTConfig, "HRA": dt.HRAConfig}
LLAMA_TARGETS = ["q_proj", "v_proj", "down_proj"]

CASES = [
    Case("vera-llama", "VERA", "llama", dict(r=8, target_modules=LLAMA_TARGETS, task_type="CAUSAL_LM")),
    Case("vera-llama-no-projection", "VERA", "llama", dict(r=4, target_modules=LLAMA_TARGETS, save_projection=False)),
    Case(
        "vera-llama-layers-bias",
        "VERA",
        "llama",
        dict(
            r=6,
            projection_prng_key=5,
            d_initial=0.3,
            target_modules=["q_proj", "up_proj"],
            layers_to_transform=[1],
            layers_pattern="layers",
            bias="vera_only",
        ),
    ),
    Case(
        "vera-gpt2-conv1d", "VERA", "gpt2", dict(r=4, target_modules=["c_attn", "c_fc", "c_proj"], fan_in_fan_out=True)
    ),
    Case(
        "vera-gpt2-no-projection",
        "VERA",
        "gpt2",
        dict(r=4, target_modules=["c_fc", "c_proj"], fan_in_fan_out=True, save_projection=False),
    ),
    Case(
        "fourierft-llama",
        "FOURIERFT",
        "llama",
        dict(n_frequency=40, scaling=50.0, target_modules=LLAMA_TARGETS, n_frequency_pattern={"down_proj": 25}),
    ),
    Case(
        "fourierft-llama-seed-excluded",
        "FOURIERFT",
        "llama",
        dict(
            n_frequency=64,
            scaling=20.0,
            random_loc_seed=3,
            target_modules="all-linear",
            exclude_modules=["o_proj"],
            bias="fourier_only",
        ),
    ),
    Case(
        "fourierft-gpt2-conv1d",
        "FOURIERFT",
        "gpt2",
        dict(n_frequency=30, scaling=30.0, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True),
    ),
    Case("hra-llama", "HRA", "llama", dict(r=4, target_modules=LLAMA_TARGETS, task_type="CAUSAL_LM")),
    Case("hra-llama-gs", "HRA", "llama", dict(r=6, apply_GS=True, target_modules=LLAMA_TARGETS)),
    Case("hra-llama-odd-all-linear", "HRA", "llama", dict(r=3, init_weights=False, target_modules="all-linear")),
    Case("hra-conv2d", "HRA", "conv2d", dict(r=4, target_modules=["conv0", "conv1"])),
    Case("hra-conv2d-gs-bias", "HRA", "conv2d", dict(r=2, apply_GS=True, target_modules=["conv0"], bias="hra_only")),
]


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Random values in every trainable tensor, so a broken load cannot pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=g) * 0.3)


def peft_save(case: Case, folder: Path) -> tuple[Any, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT's notes (save_projection=False, odd r, ...)
        config = getattr(peft, PEFT_CONFIG[case.method])(**copy.deepcopy(case.kwargs))
        model = peft.get_peft_model(fresh(case.model), config)
        randomize(model, seed=10)
        model.save_pretrained(folder)
    return model, run(model, case.model)


def dt_save(case: Case, folder: Path) -> tuple[dt.DeltaModel, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # odd r with init_weights
        model = dt.wrap(fresh(case.model), DT_CONFIG[case.method](**copy.deepcopy(case.kwargs)))
    randomize(model, seed=20)
    model.save_pretrained(folder)
    return model, run(model, case.model)


def saved_keys(folder: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(folder / "adapter_model.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118


# ------------------------------------------------------------------------------------ interop
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_peft_to_deltatune(case: Case, tmp_path: Path) -> None:
    peft_model, ref = peft_save(case, tmp_path)
    assert not torch.allclose(ref, run(fresh(case.model), case.model), atol=1e-3), "the adapter must change outputs"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = dt.DeltaModel.from_pretrained(fresh(case.model), tmp_path)
    assert not [w for w in caught if "unknown" in str(w.message).lower()], [str(w.message) for w in caught]
    torch.testing.assert_close(run(model, case.model), ref, atol=ATOL, rtol=0)
    # Merging gives PEFT's merged weights (the same merge rule), and the same outputs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = dict(peft_model.merge_and_unload().named_parameters())
    ours = model.merge_and_unload()
    for name, param in ours.named_parameters():
        torch.testing.assert_close(param, theirs[name], atol=ATOL, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    torch.testing.assert_close(run(ours, case.model), ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_deltatune_to_peft(case: Case, tmp_path: Path) -> None:
    _, ref = dt_save(case, tmp_path)
    assert not torch.allclose(ref, run(fresh(case.model), case.model), atol=1e-3), "the adapter must change outputs"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = peft.PeftConfig.from_pretrained(str(tmp_path))
    # No warning, except PEFT's own note on save_projection=False (its VeraConfig always says it).
    assert not [w for w in caught if "vera_A and vera_B" not in str(w.message)], [str(w.message) for w in caught]
    assert isinstance(config, getattr(peft, PEFT_CONFIG[case.method]))
    assert config.inference_mode is True
    for key, value in case.kwargs.items():
        if key == "target_modules" and value == "all-linear":
            continue  # written as the list of what it selected; the key test proves it is the same
        got = getattr(config, key)
        assert (sorted(got) if isinstance(value, list) else got) == (
            sorted(value) if isinstance(value, list) else value
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.PeftModel.from_pretrained(fresh(case.model), str(tmp_path))
    torch.testing.assert_close(run(model, case.model), ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_same_keys_and_config(case: Case, tmp_path: Path) -> None:
    peft_save(case, tmp_path / "peft")
    dt_save(case, tmp_path / "dt")
    assert saved_keys(tmp_path / "dt") == saved_keys(tmp_path / "peft")
    ours = json.loads((tmp_path / "dt" / "adapter_config.json").read_text())
    theirs = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert set(ours) == set(theirs) - {"auto_mapping", "peft_version"}
    for key in set(ours) - {"target_modules", "base_model_name_or_path"}:
        assert ours[key] == theirs[key], key


# ------------------------------------------------------------------------------------ VeRA specifics
def test_vera_projections_are_peft_bit_for_bit() -> None:
    kwargs = dict(r=16, projection_prng_key=123, target_modules=LLAMA_TARGETS)
    theirs = peft.get_peft_model(fresh("llama"), peft.VeraConfig(**kwargs))
    ours = dt.wrap(fresh("llama"), dt.VeraConfig(**kwargs))
    shared = ours.shared_by_adapter["default"]
    assert torch.equal(shared.vera_A, theirs.base_model.vera_A["default"])
    assert torch.equal(shared.vera_B, theirs.base_model.vera_B["default"])
    assert tuple(shared.vera_A.shape) == (16, 48) and tuple(shared.vera_B.shape) == (32, 16)  # max over targets
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters()


def test_vera_checkpoint_without_projection_loads(tmp_path: Path) -> None:
    """A save_projection=True checkpoint stripped of vera_A / vera_B rebuilds them from the seed."""
    case = CASES[0]
    _, ref = dt_save(case, tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    assert {"base_model.vera_A", "base_model.vera_B"} <= set(tensors)
    stripped = {k: v for k, v in tensors.items() if not k.startswith("base_model.vera_")}
    save_file(stripped, tmp_path / "adapter_model.safetensors", metadata={"format": "pt"})
    model = dt.DeltaModel.from_pretrained(fresh(case.model), tmp_path)
    torch.testing.assert_close(run(model, case.model), ref, atol=0, rtol=0)


def test_vera_checkpoint_projection_overrides_seed(tmp_path: Path) -> None:
    """Saved projections win over the seed, also under save_projection=False."""
    _, ref = dt_save(CASES[0], tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    tensors["base_model.vera_A"] = tensors["base_model.vera_A"] * 2
    save_file(tensors, tmp_path / "adapter_model.safetensors", metadata={"format": "pt"})
    data = json.loads((tmp_path / "adapter_config.json").read_text())
    data["save_projection"] = False
    (tmp_path / "adapter_config.json").write_text(json.dumps(data))
    model = dt.DeltaModel.from_pretrained(fresh("llama"), tmp_path)
    assert torch.equal(model.shared_by_adapter["default"].vera_A, tensors["base_model.vera_A"])
    assert not torch.allclose(run(model, "llama"), ref, atol=1e-4)


def test_vera_shared_lifecycle(tmp_path: Path) -> None:
    model = dt.wrap(fresh("llama"), dt.VeraConfig(r=4, target_modules=["q_proj"], init_weights=False))
    model.add_adapter("other", dt.VeraConfig(r=8, projection_prng_key=1, target_modules=["v_proj", "down_proj"]))
    assert set(model.shared_by_adapter) == {"default", "other"}
    assert model.shared_by_adapter["other"].vera_A.shape == (8, 48)
    # The shared tensors are not the adapters' submodules: saved and moved once, by the DeltaModel.
    assert not any("vera_A" in n for n, _ in model.model.named_buffers())
    clone = copy.deepcopy(model)  # a copy's layers use the copy's projections
    adapter = clone.model.model.layers[0].self_attn.q_proj.adapters["default"]
    assert adapter.__dict__["_shared"] is clone.shared_by_adapter["default"]
    out = run(model, "llama")
    model.to(torch.float64)
    assert model.shared_by_adapter["default"].vera_A.dtype == torch.float64
    torch.testing.assert_close(run(model, "llama").float(), out, atol=1e-5, rtol=0)
    model.to(torch.float32)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "other" / "adapter_model.safetensors").is_file()
    model.delete_adapter("other")
    assert set(model.shared_by_adapter) == {"default"}
    model.merge_and_unload()
    assert not len(model.shared_by_adapter)


# ------------------------------------------------------------------------------------ parity
def test_fourierft_locations_and_delta_match_peft() -> None:
    kwargs = dict(n_frequency=200, scaling=7.0, random_loc_seed=9, target_modules=["c_attn"], fan_in_fan_out=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.get_peft_model(fresh("gpt2"), peft.FourierFTConfig(**kwargs))
    ours = dt.wrap(fresh("gpt2"), dt.FourierFTConfig(**kwargs))
    randomize(theirs, 3)
    randomize(ours, 3)
    their_layer = theirs.base_model.model.transformer.h[0].attn.c_attn
    our_adapter = ours.model.transformer.h[0].attn.c_attn.adapters["default"]
    torch.testing.assert_close(our_adapter.delta_weight(), their_layer.get_delta_weight("default"), atol=1e-6, rtol=0)


def test_hra_merge_unmerge_round_trip_is_exact() -> None:
    model = dt.wrap(fresh("conv2d"), dt.HRAConfig(r=4, target_modules=["conv0", "conv1"], init_weights=False))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = run(model, "conv2d")
    for _ in range(3):
        model.merge_adapter()
        torch.testing.assert_close(run(model, "conv2d"), out, atol=1e-5, rtol=0)
        model.unmerge_adapter()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param, before[name], atol=1e-6, rtol=0)


def test_stacked_hra_rotates_what_is_below() -> None:
    """HRA above another adapter means W' = (W + ΔW) H, as merging does. A dense layer does that;
    a Conv2d cannot (the kernel below is opaque) and says so, unless the adapter below is merged."""
    for kind, target in (("mlp", "lin0"), ("conv2d", "conv0")):
        model = dt.wrap(fresh(kind), dt.LoraConfig(r=2, target_modules=[target], init_lora_weights=False))
        model.add_adapter("hra", dt.HRAConfig(r=2, target_modules=[target], init_weights=False))
        model.set_adapter(["default", "hra"])
        if kind == "conv2d":
            with pytest.raises(dt.DeltatuneError, match="only active"):
                run(model, kind)
            model.merge_adapter(["default"])
        out = run(model, kind)
        model.merge_adapter()
        torch.testing.assert_close(run(model, kind), out, atol=1e-5, rtol=0)
        model.unmerge_adapter()
        if kind == "mlp":
            torch.testing.assert_close(run(model, kind), out, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["VERA", "FOURIERFT", "HRA"])
def test_mixed_batch_is_refused(method: str) -> None:
    kwargs = {"VERA": dict(r=4), "FOURIERFT": dict(n_frequency=10), "HRA": dict(r=2)}[method]
    model = dt.wrap(fresh("mlp"), DT_CONFIG[method](target_modules=["lin0"], **kwargs))
    with pytest.raises(dt.DeltatuneError, match="mixed batch"):
        model(torch.randn(2, 10), adapter_names=["default", dt.BASE])


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "method,kwargs",
    [
        ("VERA", dict(r=0)),
        ("VERA", dict(vera_dropout=1.0)),
        ("VERA", dict(bias="lora_only")),
        ("VERA", dict(d_initial=float("nan"))),
        ("VERA", dict(projection_prng_key="seed")),
        ("VERA", dict(layers_pattern="layers")),
        ("FOURIERFT", dict(n_frequency=0)),
        ("FOURIERFT", dict(scaling=float("inf"))),
        ("FOURIERFT", dict(bias="vera_only")),
        ("FOURIERFT", dict(n_frequency_pattern={"q_proj": -3})),
        ("FOURIERFT", dict(n_frequency_pattern={"(": 3})),
        ("FOURIERFT", dict(target_modules=".*q_proj", layers_to_transform=[0])),
        ("FOURIERFT", dict(target_modules="all-linear", layers_to_transform=[0], layers_pattern="layers")),
        ("HRA", dict(r=-1)),
        ("HRA", dict(apply_GS="yes")),
        ("HRA", dict(bias="fourier_only")),
        ("HRA", dict(target_modules=".*q_proj", layers_to_transform=[1])),
    ],
)
def test_impossible_config_raises(method: str, kwargs: dict[str, Any]) -> None:
    kwargs = {"target_modules": ["q_proj"], **kwargs}
    with pytest.raises(dt.ConfigError):
        DT_CONFIG[method](**kwargs)


def test_fourierft_too_many_frequencies_for_a_layer() -> None:
    base = fresh("mlp")  # lin1 is 20 x 6 = 120 entries
    with pytest.raises(dt.ConfigError, match="lin1"):
        dt.wrap(base, dt.FourierFTConfig(n_frequency=121, target_modules=["lin0", "lin1"]))
    assert not any(isinstance(m, dt.AdaptedLayer) for m in base.modules()), "a failed wrap leaves the model as is"
    cfg = dt.FourierFTConfig(n_frequency=121, n_frequency_pattern={"lin1": 100}, target_modules=["lin0", "lin1"])
    dt.wrap(fresh("mlp"), cfg)


def test_hra_gram_schmidt_rank_above_dimension() -> None:
    with pytest.raises(dt.ConfigError, match="apply_GS"):
        dt.wrap(fresh("mlp"), dt.HRAConfig(r=12, apply_GS=True, target_modules=["lin0"]))  # lin0 has 10 inputs


def test_hra_odd_rank_warns() -> None:
    with pytest.warns(UserWarning, match="odd"):
        dt.HRAConfig(r=3, target_modules=["lin0"])


@pytest.mark.parametrize(
    "method,build,target",
    [
        ("VERA", EmbeddingModel, "emb"),
        ("VERA", lambda: ConvModel(2), "conv0"),
        ("FOURIERFT", EmbeddingModel, "emb"),
        ("FOURIERFT", lambda: ConvModel(1), "conv0"),
        ("FOURIERFT", lambda: ConvModel(2), "conv0"),
        ("HRA", EmbeddingModel, "emb"),
        ("HRA", GPT2Conv1DModel, "c_fc"),
        ("HRA", lambda: ConvModel(1), "conv0"),
        ("HRA", lambda: ConvModel(3), "conv0"),
        ("HRA", lambda: torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, groups=2)), "0"),
    ],
)
def test_unsupported_layer_raises(method: str, build: Callable[[], torch.nn.Module], target: str) -> None:
    kwargs = {"VERA": dict(r=2), "FOURIERFT": dict(n_frequency=4), "HRA": dict(r=2)}[method]
    with pytest.raises(dt.UnsupportedLayerError, match=target):
        dt.wrap(build(), DT_CONFIG[method](target_modules=[target], **kwargs))


def test_fourierft_slow_paths_match_merge() -> None:
    """FourierFT folds ΔW into a plain base's GEMM; stacked on another adapter, or on a base with a
    hook, it adds ΔW x instead. Both agree with the merged model, and the hook runs."""
    model = dt.wrap(fresh("mlp"), dt.LoraConfig(r=2, target_modules=["lin0"], init_lora_weights=False))
    model.add_adapter("ft", dt.FourierFTConfig(n_frequency=30, scaling=5.0, target_modules=["lin0", "lin1"]))
    calls: list[int] = []
    model.model.lin1.base_layer.register_forward_hook(lambda *_: calls.append(1))
    model.set_adapter(["default", "ft"])
    out = run(model, "mlp")
    assert calls, "the base layer's hook must run"
    model.merge_adapter()
    torch.testing.assert_close(run(model, "mlp"), out, atol=1e-5, rtol=0)


def test_meta_device_injection_then_to_empty() -> None:
    """Adapters built on the meta device rebuild what the seed defines once materialised."""
    kinds = {
        "VERA": dict(r=8, target_modules=["lin0", "lin1"], init_weights=False, save_projection=False),
        "FOURIERFT": dict(n_frequency=40, scaling=10.0, target_modules=["lin0", "lin1"]),
    }
    for method, kwargs in kinds.items():
        reference = dt.wrap(fresh("mlp"), DT_CONFIG[method](**kwargs))
        with torch.device("meta"):
            meta_base = MLP()
        model = dt.wrap(meta_base, DT_CONFIG[method](**kwargs))
        assert all(t.is_meta for t in model.state_dict().values())
        model.to_empty(device="cpu")
        with torch.no_grad():
            model.load_state_dict(reference.state_dict())  # persistent tensors: base weights, trained vectors
        torch.testing.assert_close(run(model, "mlp"), run(reference, "mlp"), atol=0, rtol=0)


@pytest.mark.parametrize("tokens", [2, 12], ids=["factored", "merged"])  # both ways of vera/fused.py
def test_vera_training_step_matches_peft(tokens: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs and gradients (input, both vectors) of a training step equal PEFT's, on the fused path."""
    from deltatune.methods.vera import adapter, fused

    assert fused.merged_is_cheaper(tokens, 10, 20, 4, True) == (tokens == 12)
    calls: list[bool] = []
    apply = fused.FusedVeraLinear.apply
    monkeypatch.setattr(adapter.FusedVeraLinear, "apply", lambda *args: calls.append(True) or apply(*args))
    config = peft.VeraConfig(r=4, target_modules=["lin0", "lin1"], init_weights=False)
    theirs = peft.get_peft_model(_seeded(MLP), config)
    randomize(theirs, seed=3)
    theirs.save_pretrained(tmp_path)
    ours = dt.DeltaModel.from_pretrained(_seeded(MLP), tmp_path, is_trainable=True)
    grads = []
    for model in (ours, theirs):
        model.train()
        x = torch.randn(tokens, 10, generator=torch.Generator().manual_seed(1), requires_grad=True)
        y = model(x)
        y.square().sum().backward()
        vectors = {
            ("lin0" if ".lin0." in n else "lin1", "b" if "lambda_b" in n else "d"): p.grad
            for n, p in model.named_parameters()
            if p.requires_grad
        }
        grads.append((y.detach(), x.grad, vectors))
    assert len(calls) == 2  # lin0 and lin1 took the fused node
    (y0, gx0, v0), (y1, gx1, v1) = grads
    torch.testing.assert_close(y0, y1, atol=ATOL, rtol=0)
    torch.testing.assert_close(gx0, gx1, atol=1e-4, rtol=1e-5)
    assert len(v0) == 4 and v0.keys() == v1.keys()
    for key in v0:
        torch.testing.assert_close(v0[key], v1[key], atol=1e-4, rtol=1e-5, msg=lambda m, k=key: f"{k}: {m}")
