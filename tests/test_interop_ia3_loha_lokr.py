"""IA3, LoHa and LoKr: interop with Hugging Face PEFT both ways, config errors, dropout, merging.

Interop cases build one seeded tiny model, then:

- PEFT -> deltatune: ``peft.get_peft_model``, every adapter tensor randomized, ``save_pretrained``;
  deltatune loads the folder onto a fresh copy of the base and gives the same outputs (atol 1e-5),
  and ``merge_and_unload`` in both libraries gives the same weights and biases.
- deltatune -> PEFT: the same with the roles swapped; ``PeftConfig.from_pretrained`` reads our
  adapter_config.json without a warning.
- Both saves of one configuration hold the same safetensors keys with the same shapes.

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
from safetensors import safe_open
from tests.models import MLP, ConvModel, EmbeddingModel, GPT2Conv1DModel, SeededBases, outputs, tiny_llama
from torch import nn

import deltatune as dt
from deltatune.methods.lokr import factorize
from deltatune.methods.lycoris_common import drop_rows

peft = pytest.importorskip("peft")

ATOL = 1e-5


class GroupedConv(nn.Module):
    """Convolutions with groups, dilation, stride and string padding: the base's geometry must carry over."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d}[dims]
        self.conv0 = conv(4, 6, 3, padding="same", dilation=2, groups=2)
        self.conv1 = conv(6, 4, 3, stride=2, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(torch.tanh(self.conv0(x)))


def _floats(*shape: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))


MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[], Any]]] = {
    "mlp": (MLP, _floats(10)),
    "gpt2": (GPT2Conv1DModel, _floats(5, 10)),
    "conv1d": (lambda: ConvModel(1), _floats(3, 12)),
    "conv2d": (lambda: ConvModel(2), _floats(3, 8, 8)),
    "conv3d": (lambda: ConvModel(3), _floats(3, 4, 6, 6)),
    "grouped1d": (lambda: GroupedConv(1), _floats(4, 11)),
    "grouped2d": (lambda: GroupedConv(2), _floats(4, 9, 9)),
    "llama": (tiny_llama, lambda: torch.randint(1, 64, (2, 7), generator=torch.Generator().manual_seed(1))),
}
fresh_base = SeededBases({kind: build for kind, (build, _) in MODELS.items()})


def run(model: nn.Module, kind: str) -> torch.Tensor:
    return outputs(model, MODELS[kind][1]())


@dataclasses.dataclass
class Case:
    id: str
    method: str  # "IA3", "LOHA", "LOKR"
    model: str
    kwargs: dict[str, Any]  # the same config for both libraries


PEFT_CONFIGS = {"IA3": "IA3Config", "LOHA": "LoHaConfig", "LOKR": "LoKrConfig"}
DT_CONFIGS = {"IA3": dt.IA3Config, "LOHA": dt.LoHaConfig, "LOKR": dt.LoKrConfig}
LLAMA_IA3 = dict(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"])
CONVS = ["conv0", "conv1"]

CASES = [
    Case("ia3-mlp", "IA3", "mlp", dict(target_modules=["lin0", "lin1"], feedforward_modules=["lin1"])),
    Case("ia3-gpt2-conv1d", "IA3", "gpt2", dict(target_modules=["c_fc", "c_proj"], feedforward_modules=["c_proj"])),
    Case("ia3-conv2d", "IA3", "conv2d", dict(target_modules=CONVS, feedforward_modules=["conv1"])),
    Case("ia3-conv3d", "IA3", "conv3d", dict(target_modules=CONVS, feedforward_modules=["conv0"])),
    Case("ia3-grouped-conv2d", "IA3", "grouped2d", dict(target_modules=CONVS, feedforward_modules=CONVS)),
    Case("ia3-llama", "IA3", "llama", dict(LLAMA_IA3, task_type="CAUSAL_LM")),
    Case(
        "ia3-llama-regex",
        "IA3",
        "llama",
        dict(target_modules=r".*\.(k_proj|down_proj)", feedforward_modules=".*down_proj"),
    ),
    Case("loha-mlp", "LOHA", "mlp", dict(target_modules=["lin0", "lin1"], r=4, alpha=8)),
    Case("loha-conv1d", "LOHA", "conv1d", dict(target_modules=CONVS, r=2, alpha=3)),
    Case("loha-conv1d-effective", "LOHA", "conv1d", dict(target_modules=CONVS, r=2, use_effective_conv2d=True)),
    Case("loha-conv2d", "LOHA", "conv2d", dict(target_modules=CONVS, r=3, alpha=6)),
    Case("loha-conv2d-effective", "LOHA", "conv2d", dict(target_modules=CONVS, r=2, use_effective_conv2d=True)),
    Case("loha-grouped-conv1d", "LOHA", "grouped1d", dict(target_modules=CONVS, r=2, use_effective_conv2d=True)),
    Case("loha-grouped-conv2d", "LOHA", "grouped2d", dict(target_modules=CONVS, r=2)),
    Case(
        "loha-llama-patterns",
        "LOHA",
        "llama",
        dict(
            target_modules=["q_proj", "v_proj", "down_proj"],
            rank_pattern={"q_proj": 2},
            alpha_pattern={r"layers\.1\.mlp\.down_proj": 3},
            task_type="CAUSAL_LM",
        ),
    ),
    Case(
        "loha-llama-layers",
        "LOHA",
        "llama",
        dict(
            target_modules=["q_proj", "up_proj", "gate_proj"],
            layers_to_transform=[1],
            layers_pattern="layers",
            exclude_modules=["up_proj"],
            modules_to_save=["lm_head"],
        ),
    ),
    Case("lokr-mlp", "LOKR", "mlp", dict(target_modules=["lin0", "lin1"], r=4, alpha=8)),
    Case(
        "lokr-mlp-decompose-both",
        "LOKR",
        "mlp",
        dict(target_modules=["lin0", "lin1"], r=1, decompose_both=True, decompose_factor=2, rank_dropout_scale=True),
    ),
    Case("lokr-conv1d-full", "LOKR", "conv1d", dict(target_modules=CONVS, r=4)),
    Case("lokr-conv1d-flat", "LOKR", "conv1d", dict(target_modules=CONVS, r=1)),
    # Only conv0: on conv1's shape PEFT's own forward fails inside torch.kron (odd strides of its einsum result).
    Case("lokr-conv1d-effective", "LOKR", "conv1d", dict(target_modules=["conv0"], r=1, use_effective_conv2d=True)),
    Case("lokr-conv2d-full", "LOKR", "conv2d", dict(target_modules=CONVS, r=4, alpha=2)),
    Case("lokr-conv2d-flat", "LOKR", "conv2d", dict(target_modules=CONVS, r=1)),
    Case("lokr-conv2d-effective", "LOKR", "conv2d", dict(target_modules=CONVS, r=1, use_effective_conv2d=True)),
    Case("lokr-grouped-conv2d", "LOKR", "grouped2d", dict(target_modules=CONVS, r=1, decompose_both=True)),
    Case(
        "lokr-llama-all-linear",
        "LOKR",
        "llama",
        dict(target_modules="all-linear", r=2, alpha=4, decompose_factor=4, init_weights="lycoris"),
    ),
]


def randomize_trainable(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=g) * 0.3)


def saved_keys(folder: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(folder / "adapter_model.safetensors", framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)


def peft_model(case: Case) -> Any:
    config = getattr(peft, PEFT_CONFIGS[case.method])(**copy.deepcopy(case.kwargs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fan_in_fan_out notes for GPT-2 Conv1D
        return peft.get_peft_model(fresh_base(case.model), config)


def assert_same_weights(ours: nn.Module, theirs: nn.Module) -> None:
    mine, other = ours.state_dict(), theirs.state_dict()
    assert mine.keys() == other.keys()
    for key, value in mine.items():
        torch.testing.assert_close(value, other[key], atol=1e-5, rtol=1e-5, msg=lambda m, key=key: f"{key}: {m}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_peft_to_deltatune(case: Case, tmp_path: Path) -> None:
    base_out = run(fresh_base(case.model), case.model)
    theirs = peft_model(case)
    randomize_trainable(theirs, seed=10)
    ref = run(theirs, case.model)
    assert not torch.allclose(ref, base_out, atol=1e-3), "the random adapter must change the output"
    theirs.save_pretrained(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = dt.DeltaModel.from_pretrained(fresh_base(case.model), tmp_path)
    assert not [w for w in caught if "unknown" in str(w.message).lower()], [str(w.message) for w in caught]
    assert isinstance(ours.peft_config["default"], DT_CONFIGS[case.method])
    torch.testing.assert_close(run(ours, case.model), ref, atol=ATOL, rtol=0)
    # Merging gives the same weights (and, for IA3's output scaling, the same biases) as PEFT's.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT: "Unmerge result can be inaccurate for (IA)^3"
        assert_same_weights(ours.merge_and_unload(), theirs.merge_and_unload())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_deltatune_to_peft(case: Case, tmp_path: Path) -> None:
    ours = dt.wrap(fresh_base(case.model), DT_CONFIGS[case.method](**copy.deepcopy(case.kwargs)))
    randomize_trainable(ours, seed=20)
    ref = run(ours, case.model)
    ours.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PEFT reads our config without complaint
        config = peft.PeftConfig.from_pretrained(str(tmp_path))
    assert type(config).__name__ == PEFT_CONFIGS[case.method] and config.inference_mode is True
    for key, value in case.kwargs.items():
        got = getattr(config, key)
        if isinstance(value, list):  # PEFT keeps module lists as sets
            got, value = sorted(got), sorted(value)
        if value != "all-linear":  # written as the list of what it selected
            assert got == value, key
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.PeftModel.from_pretrained(fresh_base(case.model), str(tmp_path))
    torch.testing.assert_close(run(theirs, case.model), ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_same_keys_and_config_fields(case: Case, tmp_path: Path) -> None:
    peft_model(case).save_pretrained(tmp_path / "peft")
    dt.wrap(fresh_base(case.model), DT_CONFIGS[case.method](**copy.deepcopy(case.kwargs))).save_pretrained(
        tmp_path / "dt"
    )
    assert saved_keys(tmp_path / "dt") == saved_keys(tmp_path / "peft")
    ours = json.loads((tmp_path / "dt" / "adapter_config.json").read_text())
    theirs = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert set(ours) <= set(theirs), f"keys PEFT does not write: {set(ours) - set(theirs)}"


# ------------------------------------------------------------------------------------ configs and layers
@pytest.mark.parametrize(
    "build",
    [
        lambda: dt.IA3Config(target_modules=["k_proj"], feedforward_modules=["down_proj"]),
        lambda: dt.IA3Config(target_modules=None, feedforward_modules=[]),
        lambda: dt.IA3Config(target_modules=["k_proj"]),
        lambda: dt.IA3Config(target_modules=["k_proj"], feedforward_modules="(", init_ia3_weights=True),
        lambda: dt.IA3Config(target_modules=["k_proj"], feedforward_modules=[], layers_to_transform=[0]),
        lambda: dt.IA3Config(target_modules=["k_proj"], feedforward_modules=[], init_ia3_weights="ones"),
        lambda: dt.LoHaConfig(r=0),
        lambda: dt.LoHaConfig(alpha=float("nan")),
        lambda: dt.LoHaConfig(rank_dropout=1.0),
        lambda: dt.LoHaConfig(module_dropout=1.5),
        lambda: dt.LoHaConfig(init_weights="lycoris"),
        lambda: dt.LoHaConfig(rank_pattern={"q_proj": 0}),
        lambda: dt.LoHaConfig(alpha_pattern={"(": 2}),
        lambda: dt.LoKrConfig(decompose_factor=0),
        lambda: dt.LoKrConfig(decompose_factor=-2),
        lambda: dt.LoKrConfig(init_weights="gaussian"),
        lambda: dt.LoKrConfig(r=2.5),
        lambda: dt.LoKrConfig(layers_pattern="layers"),
    ],
    ids=lambda _: "",
)
def test_impossible_configs_raise(build: Callable[[], dt.AdapterConfig]) -> None:
    with pytest.raises(dt.ConfigError):
        build()


@pytest.mark.parametrize(
    "make,config",
    [
        (EmbeddingModel, lambda: dt.IA3Config(target_modules=["emb"], feedforward_modules=[])),
        (EmbeddingModel, lambda: dt.LoHaConfig(target_modules=["emb"])),
        (GPT2Conv1DModel, lambda: dt.LoHaConfig(target_modules=["c_fc"])),
        (GPT2Conv1DModel, lambda: dt.LoKrConfig(target_modules=["c_proj"])),
        (lambda: ConvModel(3), lambda: dt.LoKrConfig(target_modules=["conv0"])),
        (lambda: ConvModel(3), lambda: dt.LoHaConfig(target_modules=["conv1"])),
    ],
    ids=["ia3-embedding", "loha-embedding", "loha-gpt2-conv1d", "lokr-gpt2-conv1d", "lokr-conv3d", "loha-conv3d"],
)
def test_unsupported_layers_raise(make: Callable[[], nn.Module], config: Callable[[], dt.AdapterConfig]) -> None:
    model = make()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(dt.UnsupportedLayerError, match="exclude_modules"):
        dt.wrap(model, config())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(isinstance(m, dt.AdaptedLayer) for m in model.modules())


@pytest.mark.parametrize("method", ["IA3", "LOHA", "LOKR"])
def test_mixed_batches_are_refused(method: str) -> None:
    kwargs: dict[str, Any] = {"target_modules": ["lin0"]}
    if method == "IA3":
        kwargs["feedforward_modules"] = []
    model = dt.wrap(MLP(), DT_CONFIGS[method](**kwargs))
    model.add_adapter("other", DT_CONFIGS[method](**kwargs))
    with pytest.raises(dt.DeltatuneError, match="mixed batch"):
        model(torch.randn(2, 10), adapter_names=["default", "other"])


def test_factorize_matches_peft() -> None:
    from peft.tuners.lokr.layer import factorization

    for dim in range(1, 700):
        for factor in (-1, 1, 2, 3, 4, 8, 16, 50):
            assert factorize(dim, factor) == factorization(dim, factor), (dim, factor)


# ------------------------------------------------------------------------------------ math and dropout
def _random(method: str, model: nn.Module, targets: list[str], **kwargs: Any) -> dt.DeltaModel:
    if method == "IA3":
        kwargs.setdefault("feedforward_modules", [])
        kwargs["init_ia3_weights"] = False
    else:
        kwargs["init_weights"] = False
    return dt.wrap(model, DT_CONFIGS[method](target_modules=targets, **kwargs))


def test_reference_math() -> None:
    """Each update against its formula, written out with the adapter's own tensors."""
    x = torch.randn(4, 10)
    model = _random("LOHA", MLP(), ["lin0"], r=3, alpha=5)
    a = model.model.lin0.adapters["default"]
    delta = (a.hada_w1_a @ a.hada_w1_b) * (a.hada_w2_a @ a.hada_w2_b) * 5 / 3
    lin0, lin1 = model.model.lin0, model.model.lin1
    torch.testing.assert_close(model(x), lin1(torch.relu(x @ (lin0.weight + delta).T + lin0.bias)))

    model = _random("LOKR", MLP(), ["lin0"], r=1, alpha=3, decompose_both=True)
    a = model.model.lin0.adapters["default"]
    delta = torch.kron(a.lokr_w1_a @ a.lokr_w1_b, a.lokr_w2_a @ a.lokr_w2_b) * 3
    torch.testing.assert_close(a.delta_weight(), delta)

    model = _random("IA3", MLP(), ["lin0", "lin1"], feedforward_modules=["lin1"])
    lin0, lin1 = model.model.lin0, model.model.lin1
    l0, l1 = lin0.adapters["default"].ia3_l, lin1.adapters["default"].ia3_l
    h = torch.relu(lin0.base_layer(x) * l0.flatten())  # output scaling, bias included
    torch.testing.assert_close(model(x), lin1.base_layer(h * l1.flatten()))  # input scaling


def test_module_dropout_skips_the_adapter_in_training_only() -> None:
    for method in ("LOHA", "LOKR"):
        model = _random(method, MLP(), ["lin0", "lin1"], module_dropout=1.0)
        x = torch.randn(3, 10)
        adapted = model.eval()(x)
        with model.disable_adapters():
            base = model(x)
        torch.testing.assert_close(model.train()(x), base)
        assert not torch.allclose(adapted, base)


def test_rank_dropout() -> None:
    torch.manual_seed(0)
    weight = torch.randn(200, 3)
    kept = drop_rows(weight, 0.5, rescale=False)
    zero = (kept == 0).all(dim=1)
    assert 50 < zero.sum() < 150 and torch.equal(kept[~zero], weight[~zero])
    scaled = drop_rows(weight, 0.5, rescale=True)
    zero = (scaled == 0).all(dim=1)
    torch.testing.assert_close(scaled[~zero], weight[~zero] * 200 / (~zero).sum())
    # In training the update changes from call to call; in eval it is the full update.
    model = _random("LOHA", MLP(), ["lin0"], rank_dropout=0.5)
    x = torch.randn(3, 10)
    assert not torch.equal(model.train()(x), model(x))
    assert torch.equal(model.eval()(x), model(x))
    model.train()(x).sum().backward()
    assert model.model.lin0.adapters["default"].hada_w1_a.grad is not None


# ------------------------------------------------------------------------------------ merging
class OddConvs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect")
        self.conv1 = nn.Conv2d(6, 4, (1, 3), padding=(0, 2), dilation=(1, 2), groups=2, padding_mode="circular")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(torch.tanh(self.conv0(x)))


ODD_MODELS = {"odd2d": (OddConvs, (2, 4, 7, 7)), "conv1d": (lambda: ConvModel(1), (2, 3, 12))}


@pytest.mark.parametrize("method", ["IA3", "LOHA", "LOKR"])
@pytest.mark.parametrize("variant", [0, 1, 2])
@pytest.mark.parametrize("kind", list(ODD_MODELS))
def test_merged_equals_unmerged_on_odd_convolutions(method: str, variant: int, kind: str) -> None:
    """Reflect / circular padding, groups, dilation; and every LoKr form on Conv1d."""
    from tests.method_cases import METHOD_CASES

    make, shape = ODD_MODELS[kind]
    model = dt.wrap(make(), METHOD_CASES[method].config(CONVS, False, variant)).eval()
    before = copy.deepcopy(model.get_base_model().state_dict())
    x = torch.randn(*shape)
    adapted = model(x)
    model.merge_adapter()
    torch.testing.assert_close(model(x), adapted, atol=1e-5, rtol=1e-5)
    model.unmerge_adapter()
    for key, value in model.get_base_model().state_dict().items():
        if key in before:
            torch.testing.assert_close(value, before[key], atol=1e-6, rtol=1e-5)


def test_ia3_stacked_on_lora_merges_bias_in_order() -> None:
    model = dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin0", "lin1"], init_lora_weights=False)).eval()
    model.add_adapter("ia3", dt.IA3Config(target_modules=["lin0", "lin1"], feedforward_modules=[]))
    randomize_trainable(model, seed=3)
    with torch.no_grad():
        for _, adapter in model.adapter_modules("ia3"):
            adapter.ia3_l.normal_()
    model.set_adapter(["default", "ia3"])
    x = torch.randn(5, 10)
    adapted = model(x)
    bias = model.model.lin0.bias.detach().clone()
    model.merge_adapter()
    assert not torch.equal(model.model.lin0.bias, bias), "output scaling reaches the bias"
    torch.testing.assert_close(model(x), adapted, atol=1e-5, rtol=1e-5)
    model.unmerge_adapter()
    torch.testing.assert_close(model.model.lin0.bias, bias, atol=1e-6, rtol=1e-5)


def test_ia3_safe_merge_refuses_inf_and_writes_nothing() -> None:
    model = _random("IA3", MLP(), ["lin0"])
    with torch.no_grad():
        model.model.lin0.adapters["default"].ia3_l[3] = float("inf")
    before = copy.deepcopy(model.get_base_model().state_dict())
    with pytest.raises(dt.MergeError):
        model.merge_adapter(safe_merge=True)
    after = model.get_base_model().state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_ia3_zero_entry_unmerges_without_nan() -> None:
    model = _random("IA3", MLP(), ["lin0"])
    with torch.no_grad():
        model.model.lin0.adapters["default"].ia3_l[2] = 0.0
    model.merge_adapter()
    model.unmerge_adapter()
    assert torch.isfinite(model.model.lin0.weight).all() and torch.isfinite(model.model.lin0.bias).all()


@pytest.mark.parametrize("method", ["IA3", "LOHA", "LOKR"])
def test_low_precision_base_and_meta_device(method: str) -> None:
    model = _random(method, MLP().to(torch.bfloat16), ["lin0", "lin1"])
    assert all(p.dtype == torch.float32 for p in model.adapter_parameters("default"))
    assert model(torch.randn(2, 10, dtype=torch.bfloat16)).dtype == torch.bfloat16
    with torch.device("meta"):
        meta = MLP()
    model = _random(method, meta, ["lin0", "lin1"])
    assert all(p.device.type == "meta" for p in model.adapter_parameters("default"))


def test_stacked_adapters_add_up_and_merge() -> None:
    """Two active adapters on one layer: the upper one sees ``inner`` (not the base) and adds its own op."""
    model = _random("LOHA", MLP(), ["lin0", "lin1"], r=2)
    model.add_adapter("kron", dt.LoKrConfig(target_modules=["lin0"], r=1, init_weights=False))
    model.set_adapter(["default", "kron"])
    model.eval()
    x = torch.randn(4, 10)
    lin0, lin1 = model.model.lin0, model.model.lin1
    w0 = lin0.weight + lin0.adapters["default"].delta_weight() + lin0.adapters["kron"].delta_weight()
    w1 = lin1.weight + lin1.adapters["default"].delta_weight()
    expected = torch.relu(x @ w0.T + lin0.bias) @ w1.T + lin1.bias
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
    model.merge_adapter()
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["LOHA", "LOKR"])
def test_folded_forward_equals_the_sum_and_respects_hooks(method: str) -> None:
    """Right on a plain base, ΔW is folded into the base's op; a base with hooks runs its own forward."""
    model = _random(method, ConvModel(2), CONVS).eval()
    x = torch.randn(2, 3, 8, 8)
    folded = model(x)
    calls = []
    for name in CONVS:
        model.model.get_submodule(name).base_layer.register_forward_hook(lambda *_: calls.append(1))
    torch.testing.assert_close(model(x), folded, atol=1e-5, rtol=1e-5)
    assert len(calls) == 2, "the base's hooks ran"
