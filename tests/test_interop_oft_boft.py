"""OFT and BOFT: interop with Hugging Face PEFT both ways, the shared math, config and layer errors.

Interop cases build one seeded tiny model, then:

- PEFT -> deltatune: ``peft.get_peft_model``, every adapter tensor randomized, ``save_pretrained``;
  deltatune loads the folder onto a fresh copy of the base and gives the same outputs (atol 1e-5).
- deltatune -> PEFT: the same with the roles swapped; PEFT reads our adapter_config.json without
  a warning (OFT's Cayley-Neumann version check included).
- Both saves of one configuration hold the same safetensors keys with the same shapes.

OFT on Conv2d: PEFT 0.21's unmerged forward unfolds the input into kernel-sized patches, rotates
them and folds them back with ``F.fold``, which *sums* overlapping patches (and drops the
padding); so even a freshly initialised adapter (identity rotation) changes a 3x3 convolution's
output, by up to ~5 on these models, and its unmerged output differs from its merged one by as
much. deltatune rotates the filters (the paper's update, and what PEFT's ``merge`` computes), so
its merged and unmerged outputs are equal; on Conv2d we therefore compare deltatune (unmerged and
merged) with PEFT *merged*, and with PEFT unmerged only on a 1x1 convolution, where PEFT's
unfold/fold is exact. BOFT's Conv2d in PEFT rotates the filters, so there both paths agree.

PEFT builds BOFT butterfly factors (boft_n_butterfly_factor > 1) only with its CUDA extension; on
CPU it silently falls back to one factor. The butterfly cases give PEFT a pure-torch stand-in
for that extension (``_CpuBlockDiag``: the same batched block-diagonal), so PEFT's own
permutation and product code runs.

PEFT is only imported here, as the reference implementation; deltatune never imports it.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from tests.models import MLP, ConvModel, EmbeddingModel, SeededBases, outputs
from torch import nn

import deltatune as dt
from deltatune.methods import orthogonal as orth

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
boft_layer = pytest.importorskip("peft.tuners.boft.layer")
oft_layer = pytest.importorskip("peft.tuners.oft.layer")

ATOL = 1e-5


# ------------------------------------------------------------------------------------ models
class PointwiseConv(nn.Module):
    """1x1 convolutions: the one Conv2d geometry where PEFT's unmerged OFT forward is exact."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(8, 6, 1)
        self.conv1 = nn.Conv2d(6, 4, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(torch.tanh(self.conv0(x)))


def tiny_llama() -> nn.Module:
    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        attention_bias=True,  # so that bias="oft_only" has something to train
    )
    return transformers.LlamaForCausalLM(cfg)


def _floats(*shape: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))


def _ids() -> torch.Tensor:
    return torch.randint(1, 50, (2, 7), generator=torch.Generator().manual_seed(1))


MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[], Any]]] = {
    "mlp": (MLP, _floats(10)),
    "conv2d": (lambda: ConvModel(2), _floats(3, 8, 8)),
    "conv1x1": (PointwiseConv, _floats(8, 5, 5)),
    "embedding": (EmbeddingModel, _ids),
    "llama": (tiny_llama, _ids),
}
fresh_base = SeededBases({kind: build for kind, (build, _) in MODELS.items()})


def run(model: nn.Module, kind: str) -> torch.Tensor:
    return outputs(model, MODELS[kind][1]())


def randomize(model: nn.Module, seed: int) -> None:
    """Random values in every trainable tensor; BOFT's scales around 1, the rest around 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                noise = torch.randn(param.shape, generator=g) * 0.1
                param.copy_(noise + 1 if "boft_s" in name else noise)


# ------------------------------------------------------------------------------------ PEFT's BOFT on CPU
class _CpuBlockDiag:
    """Stand-in for PEFT's CUDA block-diagonal extension: (N, D, b, b) -> (N, D*b, D*b)."""

    @staticmethod
    def forward(blocks: torch.Tensor) -> list[torch.Tensor]:
        return [torch.stack([torch.block_diag(*factor) for factor in blocks])]

    @staticmethod
    def backward(grad: torch.Tensor, blocks: torch.Tensor) -> list[torch.Tensor]:
        size = blocks.shape[-1]
        parts = [grad[:, i * size : (i + 1) * size, i * size : (i + 1) * size] for i in range(blocks.shape[1])]
        return [torch.stack(parts, dim=1)]


@pytest.fixture
def peft_butterfly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(boft_layer, "get_fbd_cuda", lambda: _CpuBlockDiag)


# ------------------------------------------------------------------------------------ interop cases
# (id, model, method, config kwargs (the same for both libraries), compare with PEFT merged)
CASES: list[tuple[str, str, str, dict[str, Any], bool]] = [
    ("oft-mlp-r", "mlp", "OFT", dict(r=2, oft_block_size=0, target_modules=["lin0", "lin1"]), False),
    (
        "oft-mlp-exact",
        "mlp",
        "OFT",
        dict(oft_block_size=5, use_cayley_neumann=False, target_modules=["lin0", "lin1"]),
        False,
    ),
    (
        "oft-llama-qv-down",
        "llama",
        "OFT",
        dict(oft_block_size=8, target_modules=["q_proj", "v_proj", "down_proj"]),
        False,
    ),
    # 3 and 4 Neumann terms give the same series in this format; 2 terms is I + 2S.
    (
        "oft-llama-neumann3",
        "llama",
        "OFT",
        dict(oft_block_size=8, num_cayley_neumann_terms=3, target_modules=["q_proj"]),
        False,
    ),
    (
        "oft-llama-neumann2",
        "llama",
        "OFT",
        dict(oft_block_size=4, num_cayley_neumann_terms=2, target_modules=["k_proj", "o_proj"]),
        False,
    ),
    (
        "oft-llama-share-exact",
        "llama",
        "OFT",
        dict(oft_block_size=8, block_share=True, use_cayley_neumann=False, target_modules=["q_proj", "up_proj"]),
        False,
    ),
    (
        "oft-llama-coft",
        "llama",
        "OFT",
        dict(oft_block_size=8, coft=True, eps=0.3, target_modules=["v_proj", "o_proj"]),
        False,
    ),
    (
        "oft-llama-bias-layers-save",
        "llama",
        "OFT",
        dict(
            r=4,
            oft_block_size=0,
            target_modules=["q_proj", "v_proj"],
            bias="oft_only",
            layers_to_transform=[1],
            layers_pattern="layers",
            modules_to_save=["lm_head"],
        ),
        False,
    ),
    ("oft-llama-all-linear", "llama", "OFT", dict(oft_block_size=16, target_modules="all-linear"), False),
    ("oft-embedding", "embedding", "OFT", dict(oft_block_size=4, target_modules=["emb", "lin0"]), False),
    ("oft-conv2d-block", "conv2d", "OFT", dict(oft_block_size=8, target_modules=["conv1"]), True),
    (
        "oft-conv2d-padded-exact",
        "conv2d",
        "OFT",
        dict(r=3, oft_block_size=0, use_cayley_neumann=False, target_modules=["conv0"]),
        True,
    ),
    ("oft-conv1x1", "conv1x1", "OFT", dict(oft_block_size=2, target_modules=["conv0", "conv1"]), False),
    ("boft-mlp-size", "mlp", "BOFT", dict(boft_block_size=2, target_modules=["lin0", "lin1"]), False),
    ("boft-mlp-num", "mlp", "BOFT", dict(boft_block_size=0, boft_block_num=2, target_modules=["lin0", "lin1"]), False),
    (
        "boft-llama-bias",
        "llama",
        "BOFT",
        dict(boft_block_size=8, target_modules=["q_proj", "v_proj", "down_proj"], bias="boft_only"),
        False,
    ),
    ("boft-llama-all-linear", "llama", "BOFT", dict(boft_block_size=4, target_modules="all-linear"), False),
    (
        "boft-conv2d",
        "conv2d",
        "BOFT",
        dict(boft_block_size=0, boft_block_num=1, target_modules=["conv0", "conv1"]),
        False,
    ),
    ("boft-conv2d-blocks", "conv2d", "BOFT", dict(boft_block_size=4, target_modules=["conv1"]), False),
    # butterfly factors: PEFT runs with the _CpuBlockDiag stand-in
    (
        "boft-llama-butterfly2",
        "llama",
        "BOFT",
        dict(boft_block_size=4, boft_n_butterfly_factor=2, target_modules=["q_proj", "down_proj"]),
        False,
    ),
    (
        "boft-llama-butterfly3",
        "llama",
        "BOFT",
        dict(boft_block_size=0, boft_block_num=8, boft_n_butterfly_factor=3, target_modules=["v_proj", "up_proj"]),
        False,
    ),
    (
        "boft-conv2d-butterfly",
        "conv2d",
        "BOFT",
        dict(boft_block_size=2, boft_n_butterfly_factor=3, target_modules=["conv1"]),
        False,
    ),
]


def _configs(method: str, kwargs: dict[str, Any]) -> tuple[Any, dt.AdapterConfig]:
    theirs = getattr(peft, f"{method}Config")(init_weights=False, **copy.deepcopy(kwargs))
    ours = getattr(dt, f"{method}Config")(init_weights=False, **copy.deepcopy(kwargs))
    return theirs, ours


def _peft_model(kind: str, method: str, kwargs: dict[str, Any], seed: int) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT's CUDA-extension notes for BOFT
        model = peft.get_peft_model(fresh_base(kind), _configs(method, kwargs)[0])
    randomize(model, seed)
    return model


def _dt_model(kind: str, method: str, kwargs: dict[str, Any], seed: int) -> dt.DeltaModel:
    model = dt.wrap(fresh_base(kind), _configs(method, kwargs)[1])
    randomize(model, seed)
    return model


def _peft_reference(model: Any, kind: str, merged: bool) -> torch.Tensor:
    if not merged:
        return run(model, kind)
    model.merge_adapter()
    try:
        return run(model, kind)
    finally:
        model.unmerge_adapter()


def _use_butterfly(case_id: str, request: pytest.FixtureRequest) -> None:
    if "butterfly" in case_id:
        request.getfixturevalue("peft_butterfly")


def saved_keys(folder: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(folder / "adapter_model.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_peft_to_deltatune(case: tuple, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    case_id, kind, method, kwargs, peft_merged = case
    _use_butterfly(case_id, request)
    theirs = _peft_model(kind, method, kwargs, seed=1)
    ref = _peft_reference(theirs, kind, peft_merged)
    assert not torch.allclose(ref, run(fresh_base(kind), kind), atol=1e-3), "the adapter must change the output"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.save_pretrained(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = dt.DeltaModel.from_pretrained(fresh_base(kind), tmp_path)
    assert not [w for w in caught if "unknown" in str(w.message).lower()], [str(w.message) for w in caught]
    torch.testing.assert_close(run(ours, kind), ref, atol=ATOL, rtol=0)
    ours.merge_adapter()  # merged equals unmerged, on Conv2d too
    torch.testing.assert_close(run(ours, kind), ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_deltatune_to_peft(case: tuple, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    case_id, kind, method, kwargs, peft_merged = case
    _use_butterfly(case_id, request)
    ours = _dt_model(kind, method, kwargs, seed=2)
    ref = run(ours, kind)
    assert not torch.allclose(ref, run(fresh_base(kind), kind), atol=1e-3), "the adapter must change the output"
    ours.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PEFT reads our config without complaint
        config = peft.PeftConfig.from_pretrained(str(tmp_path))
        type(config).check_kwargs(**json.loads((tmp_path / "adapter_config.json").read_text()))
    assert config.peft_type == method and config.inference_mode is True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.PeftModel.from_pretrained(fresh_base(kind), str(tmp_path))
    torch.testing.assert_close(_peft_reference(theirs, kind, peft_merged), ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_same_keys_and_shapes(case: tuple, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    case_id, kind, method, kwargs, _ = case
    _use_butterfly(case_id, request)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _peft_model(kind, method, kwargs, seed=1).save_pretrained(tmp_path / "peft")
    _dt_model(kind, method, kwargs, seed=2).save_pretrained(tmp_path / "dt")
    assert saved_keys(tmp_path / "dt") == saved_keys(tmp_path / "peft")
    ours_cfg = json.loads((tmp_path / "dt" / "adapter_config.json").read_text())
    theirs_cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    for key, value in theirs_cfg.items():
        if key not in ("auto_mapping", "peft_version", "target_modules", "base_model_name_or_path"):
            assert ours_cfg[key] == value, key


def test_conv2d_peft_unmerged_forward_is_not_the_rotation() -> None:
    """Documents PEFT 0.21's OFT Conv2d discrepancy (see the module docstring): even at init."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.get_peft_model(fresh_base("conv2d"), peft.OFTConfig(oft_block_size=8, target_modules=["conv1"]))
    base_out = run(fresh_base("conv2d"), "conv2d")
    assert (run(theirs, "conv2d") - base_out).abs().max() > 0.1  # PEFT: identity rotation, different output
    ours = dt.wrap(fresh_base("conv2d"), dt.OFTConfig(oft_block_size=8, target_modules=["conv1"]))
    torch.testing.assert_close(run(ours, "conv2d"), base_out, atol=1e-6, rtol=0)


def test_peft_cpu_boft_butterfly_checkpoint_is_refused(tmp_path: Path) -> None:
    """Without its CUDA extension PEFT builds one factor but writes the requested factor count to
    the config; the tensors then do not fit the config, and loading says so instead of guessing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = peft.BOFTConfig(boft_block_size=4, boft_n_butterfly_factor=2, target_modules=["q_proj"])
        peft.get_peft_model(fresh_base("llama"), cfg).save_pretrained(tmp_path)
    assert saved_keys(tmp_path)["base_model.model.model.layers.0.self_attn.q_proj.boft_R"][0] == 1
    with pytest.raises(dt.CheckpointError, match="shape"):
        dt.DeltaModel.from_pretrained(fresh_base("llama"), tmp_path)


# ------------------------------------------------------------------------------------ shared math vs PEFT's
@pytest.mark.parametrize("terms", [2, 3, 4, 5, 6, 8])
def test_cayley_neumann_matches_peft(terms: int) -> None:
    size, blocks = 6, 4
    module = oft_layer.OFTRotationModule(blocks, orth.packed_size(size), size, blocks * size)
    nn.init.normal_(module.weight, std=0.2)
    ref = module._cayley_batch(module.weight, size, True, terms)
    ours = orth.cayley_neumann(orth.skew_from_packed(module.weight, size), terms)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    exact = orth.cayley(orth.skew_from_packed(module.weight, size))
    torch.testing.assert_close(exact, module._cayley_batch(module.weight, size, False), atol=1e-6, rtol=0)
    torch.testing.assert_close(exact @ exact.mT, torch.eye(size).expand(blocks, size, size), atol=1e-6, rtol=0)


def test_coft_projection_matches_peft_and_is_idempotent() -> None:
    module = oft_layer.OFTRotationModule(5, orth.packed_size(4), 4, 20)
    nn.init.normal_(module.weight, std=1.0)
    with torch.no_grad():
        module.weight[0] *= 1e-4  # one block already inside the radius
    ref = module._project_batch(module.weight, eps=0.3)
    ours = orth.coft_project(module.weight.detach(), 0.3)
    torch.testing.assert_close(ours, ref, atol=1e-7, rtol=1e-6)
    assert torch.equal(orth.coft_project(ours, 0.3), ours)


@pytest.mark.parametrize("features,size,factors", [(32, 4, 3), (48, 4, 3), (24, 2, 2), (64, 8, 3), (16, 2, 4)])
def test_butterfly_matches_peft_permutation_matrices(features: int, size: int, factors: int) -> None:
    count = features // size
    layer = object.__new__(boft_layer.Linear)  # only its permutation helpers are used
    perms = [
        layer.perm2mat(layer.block_butterfly_perm(features, count // 2**i, size // 2, factors - 1))
        for i in range(factors)
    ]
    raw = torch.randn(factors, count, size, size)
    blocks = orth.cayley(orth.skew_from_square(raw))
    expected = torch.eye(features)
    for perm, factor in zip(perms, blocks, strict=True):
        expected = perm @ torch.block_diag(*factor) @ perm.T @ expected
    torch.testing.assert_close(orth.dense(blocks, features), expected, atol=1e-5, rtol=0)
    x = torch.randn(3, features)
    torch.testing.assert_close(orth.rotate(x, blocks, transpose=True), x @ expected.T, atol=1e-5, rtol=0)
    back = orth.rotate(orth.rotate(x, blocks), orth.inverse_blocks(blocks, orthogonal=True), transpose=True)
    torch.testing.assert_close(back, x, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------ behaviour
def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer" in n}


@pytest.mark.parametrize(
    "config",
    [
        dt.OFTConfig(oft_block_size=8, target_modules=["q_proj", "down_proj"]),
        dt.OFTConfig(oft_block_size=8, use_cayley_neumann=False, block_share=True, target_modules=["q_proj"]),
        dt.OFTConfig(oft_block_size=4, coft=True, eps=0.2, target_modules=["v_proj"]),
        dt.BOFTConfig(boft_block_size=4, boft_n_butterfly_factor=3, target_modules=["q_proj", "down_proj"]),
    ],
    ids=["oft-neumann", "oft-exact-shared", "oft-coft", "boft-butterfly"],
)
def test_merge_unmerge_round_trip_on_llama(config: dt.AdapterConfig) -> None:
    model = dt.wrap(fresh_base("llama"), copy.deepcopy(config))
    randomize(model, seed=3)
    before = _weights(model)
    adapted = run(model, "llama")
    model.merge_adapter()
    torch.testing.assert_close(run(model, "llama"), adapted, atol=ATOL, rtol=0)
    model.unmerge_adapter()
    for name, weight in _weights(model).items():
        torch.testing.assert_close(weight, before[name], atol=1e-6, rtol=0, msg=name)
    torch.testing.assert_close(run(model, "llama"), adapted, atol=ATOL, rtol=0)


@pytest.mark.parametrize("method", ["OFT", "BOFT"])
def test_conv_geometry_merged_equals_unmerged(method: str) -> None:
    """Stride, padding, dilation and padding modes carry over to the rotated filters."""

    class Convs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(4, 6, 3, padding=2, dilation=2, padding_mode="reflect")
            self.b = nn.Conv2d(6, 4, (3, 1), stride=(2, 1), padding="valid")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(x)))

    torch.manual_seed(0)
    base = Convs().eval()
    reference = copy.deepcopy(base)
    layout = dict(r=0, oft_block_size=6) if method == "OFT" else dict(boft_block_size=6)
    model = dt.wrap(base, getattr(dt, f"{method}Config")(target_modules=["a", "b"], init_weights=False, **layout))
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        adapted = model(x)
        assert not torch.allclose(adapted, reference(x), atol=1e-3)
        model.merge_adapter()
        torch.testing.assert_close(model(x), adapted, atol=ATOL, rtol=0)
        plain = model.merge_and_unload()
        torch.testing.assert_close(plain(x), adapted, atol=ATOL, rtol=0)


def test_stacked_conv_adapters() -> None:
    """A filter rotation needs the base filters: on top of another unmerged adapter it refuses;
    with the inner adapter merged first it composes exactly like merging both."""
    model = dt.wrap(fresh_base("conv2d"), dt.OFTConfig(oft_block_size=8, init_weights=False, target_modules=["conv1"]))
    model.add_adapter("second", dt.BOFTConfig(boft_block_size=4, init_weights=False, target_modules=["conv1"]))
    model.set_adapter(["default", "second"])
    with pytest.raises(dt.DeltatuneError, match="merge the other one first"):
        run(model, "conv2d")
    model.merge_adapter(["default"])
    both = run(model, "conv2d")
    model.merge_adapter(["second"])
    torch.testing.assert_close(run(model, "conv2d"), both, atol=ATOL, rtol=0)
    model.unmerge_adapter()
    model.set_adapter("default")
    assert not torch.allclose(run(model, "conv2d"), both, atol=1e-4)


def test_coft_save_load_is_bit_exact(tmp_path: Path) -> None:
    model = dt.wrap(fresh_base("llama"), dt.OFTConfig(oft_block_size=8, coft=True, eps=0.1, target_modules=["q_proj"]))
    randomize(model, seed=4)
    adapted = run(model, "llama")  # the forward projects the generators into the COFT ball
    for _, adapter in model.adapter_modules("default"):
        norms = adapter.generators.detach().norm(dim=-1) * 2**0.5
        assert (norms <= 0.1 / adapter.r**0.5 * (1 + 1e-5)).all()
    model.save_pretrained(tmp_path)
    loaded = dt.DeltaModel.from_pretrained(fresh_base("llama"), tmp_path)
    assert torch.equal(run(loaded, "llama"), adapted)


@pytest.mark.parametrize("method", ["OFT", "BOFT"])
def test_block_dropout_only_while_training(method: str) -> None:
    if method == "OFT":
        config: dt.AdapterConfig = dt.OFTConfig(oft_block_size=4, module_dropout=0.5, target_modules=["q_proj"])
    else:
        config = dt.BOFTConfig(boft_block_size=4, boft_dropout=0.5, target_modules=["q_proj"])
    config.init_weights = False
    model = dt.wrap(fresh_base("llama"), config)
    adapter = next(a for _, a in model.adapter_modules("default"))
    adapter.train()
    torch.manual_seed(0)
    blocks = adapter.blocks()
    eye = torch.eye(4)
    dropped = [(b - eye).abs().max() == 0 for b in blocks.flatten(0, 1)]
    assert sum(dropped) == int(0.5 * (32 // 4))
    adapter.eval()
    assert not any((b - eye).abs().max() == 0 for b in adapter.blocks().flatten(0, 1))


@pytest.mark.parametrize("method", ["OFT", "BOFT"])
def test_training_step_reaches_every_adapter_tensor(method: str) -> None:
    if method == "OFT":
        config: dt.AdapterConfig = dt.OFTConfig(oft_block_size=8, target_modules=["q_proj", "down_proj"])
    else:
        config = dt.BOFTConfig(boft_block_size=4, boft_n_butterfly_factor=2, target_modules=["q_proj", "down_proj"])
    model = dt.wrap(fresh_base("llama"), config).train()
    randomize(model, seed=5)
    ids = _ids()
    model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values()), list(grads)


@pytest.mark.parametrize("method", ["OFT", "BOFT"])
@pytest.mark.parametrize("kind", ["mlp", "conv2d"])
def test_bf16_base_with_fp32_adapters(method: str, kind: str) -> None:
    layout = {"OFT": dict(r=1, oft_block_size=0), "BOFT": dict(boft_block_size=0, boft_block_num=1)}[method]
    config = getattr(dt, f"{method}Config")(target_modules=["lin0", "conv1"][kind == "conv2d"], **layout)
    config.init_weights = False
    base = fresh_base(kind).to(torch.bfloat16)
    reference = run(copy.deepcopy(base).float(), kind)
    model = dt.wrap(base, config)
    assert all(p.dtype == torch.float32 for p in model.adapter_parameters("default"))
    x = MODELS[kind][1]().to(torch.bfloat16)
    with torch.no_grad():
        out = model(x)
        assert out.dtype == torch.bfloat16
        assert not torch.allclose(out.float(), reference, atol=1e-2)
        model.merge_adapter()
        torch.testing.assert_close(model(x).float(), out.float(), atol=0.05, rtol=0.02)


def test_mixed_batches_are_refused() -> None:
    model = dt.wrap(fresh_base("mlp"), dt.OFTConfig(r=2, oft_block_size=0, target_modules=["lin0"]))
    model.add_adapter("b", dt.BOFTConfig(boft_block_size=2, target_modules=["lin0"]))
    with pytest.raises(dt.DeltatuneError, match="mixed batch"):
        model(torch.randn(2, 10), adapter_names=["default", "b"])


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: dt.OFTConfig(r=4), "r=4, oft_block_size=0"),
        (lambda: dt.OFTConfig(r=0, oft_block_size=0), "needs r or oft_block_size"),
        (lambda: dt.OFTConfig(oft_block_size=-2), "non-negative"),
        (lambda: dt.OFTConfig(num_cayley_neumann_terms=1), "2 or more"),
        (lambda: dt.OFTConfig(module_dropout=1.0), r"\[0, 1\)"),
        (lambda: dt.OFTConfig(coft=True, eps=0.0), "eps"),
        (lambda: dt.OFTConfig(bias="lora_only"), "oft_only"),
        (lambda: dt.OFTConfig(init_weights="gaussian"), "True or False"),  # type: ignore[arg-type]
        (lambda: dt.BOFTConfig(boft_block_size=4, boft_block_num=2), "only one may be given"),
        (lambda: dt.BOFTConfig(boft_block_size=0), "needs boft_block_size or boft_block_num"),
        (lambda: dt.BOFTConfig(boft_n_butterfly_factor=0), "1 or more"),
        (lambda: dt.BOFTConfig(boft_block_size=0, boft_block_num=6, boft_n_butterfly_factor=3), "multiple of"),
        (lambda: dt.BOFTConfig(boft_block_size=3, boft_n_butterfly_factor=2), "even"),
        (lambda: dt.BOFTConfig(boft_dropout=-0.1), r"\[0, 1\)"),
        (lambda: dt.BOFTConfig(bias="oft_only"), "boft_only"),
    ],
)
def test_impossible_configs_raise(make: Callable[[], dt.AdapterConfig], match: str) -> None:
    with pytest.raises(dt.ConfigError, match=match):
        make()


@pytest.mark.parametrize(
    "config,match",
    [
        (dt.OFTConfig(oft_block_size=4, target_modules=["lin0"]), r"lin0.*valid block sizes there are \[1, 2, 5, 10\]"),
        (
            dt.OFTConfig(r=3, oft_block_size=0, target_modules=["lin1"]),
            r"lin1.*valid r there are \[1, 2, 4, 5, 10, 20\]",
        ),
        (
            dt.BOFTConfig(boft_block_size=4, target_modules=["lin0"]),
            r"lin0.*valid block sizes there are \[1, 2, 5, 10\]",
        ),
        (
            dt.BOFTConfig(boft_block_size=2, boft_n_butterfly_factor=2, target_modules=["lin0"]),
            r"lin0.*multiple of block_size x 2\^\(factor-1\) = 4.*valid block sizes there are \[\]",
        ),
        (
            dt.BOFTConfig(boft_block_size=0, boft_block_num=3, target_modules=["lin1"]),
            r"lin1.*valid block numbers there are \[1, 2, 4, 5, 10, 20\]",
        ),
    ],
)
def test_block_layout_that_does_not_fit_a_layer_names_it(config: dt.AdapterConfig, match: str) -> None:
    with pytest.raises(dt.ConfigError, match=match):
        dt.wrap(fresh_base("mlp"), config)


class _Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.grouped = nn.Conv2d(4, 4, 3, groups=2)
        self.emb = nn.Embedding(10, 8)
        self.norm = nn.LayerNorm(8)


@pytest.mark.parametrize(
    "config,match",
    [
        (dt.OFTConfig(oft_block_size=4, target_modules=["grouped"]), "groups=2"),
        (dt.OFTConfig(oft_block_size=4, target_modules=["norm"]), "LayerNorm"),
        (dt.BOFTConfig(boft_block_size=4, target_modules=["grouped"]), "groups=2"),
        (dt.BOFTConfig(boft_block_size=4, target_modules=["emb"]), "Embedding"),
    ],
)
def test_unsupported_layers_raise(config: dt.AdapterConfig, match: str) -> None:
    with pytest.raises(dt.UnsupportedLayerError, match=match):
        dt.wrap(_Odd(), config)
