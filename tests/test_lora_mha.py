"""LoRA on nn.MultiheadAttention: PEFT's keys and outputs both ways, merged-weight semantics, errors.

PEFT is only imported here, as the reference implementation; deltatune never imports it.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.models import MHAModel
from torch import nn

import deltatune as dt
from deltatune.methods.lora.mha import OUT_PROJ_FACTOR

peft = pytest.importorskip("peft")

X = torch.randn(3, 5, 10, generator=torch.Generator().manual_seed(0))


def base_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MHAModel().eval()


def randomize(model: nn.Module, seed: int = 1) -> None:
    """Random values in every LoRA tensor (PEFT's or ours), so a wrong key or rule cannot pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.3)


def keys(folder: Path) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in load_file(folder / "adapter_model.safetensors").items()}


CONFIGS = {
    "mha": dict(target_modules=["mha"], r=2, lora_alpha=4),
    "mha+linear, rslora": dict(target_modules=["mha", "lin1"], r=4, lora_alpha=3, use_rslora=True),
    "rank_pattern": dict(target_modules=["mha", "lin0"], r=2, lora_alpha=4, rank_pattern={"mha": 3}),
}


@pytest.mark.parametrize("kwargs", CONFIGS.values(), ids=CONFIGS.keys())
def test_peft_adapter_loads_with_the_same_outputs(kwargs: dict, tmp_path: Path) -> None:
    theirs = peft.get_peft_model(base_model(), peft.LoraConfig(**kwargs)).eval()
    randomize(theirs)
    expected = theirs(X)
    theirs.save_pretrained(tmp_path)
    ours = dt.DeltaModel.from_pretrained(base_model(), tmp_path).eval()
    assert not torch.allclose(expected, base_model()(X), atol=1e-3)
    torch.testing.assert_close(ours(X), expected, atol=1e-5, rtol=0)
    ours.merge_adapter()
    torch.testing.assert_close(ours(X), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kwargs", CONFIGS.values(), ids=CONFIGS.keys())
def test_deltatune_adapter_loads_in_peft_with_the_same_outputs_and_keys(kwargs: dict, tmp_path: Path) -> None:
    ours = dt.wrap(base_model(), dt.LoraConfig(**kwargs)).eval()
    randomize(ours, seed=2)
    expected = ours(X)
    ours.save_pretrained(tmp_path / "ours")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # our adapter_config.json reads without a warning
        config = peft.PeftConfig.from_pretrained(tmp_path / "ours")
    assert config.peft_type == peft.PeftType.LORA
    theirs = peft.PeftModel.from_pretrained(base_model(), tmp_path / "ours").eval()
    torch.testing.assert_close(theirs(X), expected, atol=1e-5, rtol=0)
    merged = theirs.merge_and_unload()
    torch.testing.assert_close(merged(X), expected, atol=1e-5, rtol=0)

    reference = peft.get_peft_model(base_model(), peft.LoraConfig(**kwargs))
    reference.save_pretrained(tmp_path / "peft")
    assert keys(tmp_path / "ours") == keys(tmp_path / "peft")
    assert "base_model.model.mha.base_layer.out_proj.lora_A.weight" in keys(tmp_path / "ours")


def test_merged_weight_semantics() -> None:
    """The attention runs with W_in + s B A and W_out + c s B' A' (c = 2, PEFT 0.21.2's rule)."""
    model = dt.wrap(base_model(), dt.LoraConfig(target_modules=["mha"], r=2, lora_alpha=6)).eval()
    randomize(model)
    adapter = model.model.mha.adapters["default"]
    plain = base_model()
    with torch.no_grad():
        plain.mha.in_proj_weight += 3.0 * adapter.lora_B.weight @ adapter.lora_A.weight
        out = adapter.base_layer.out_proj
        plain.mha.out_proj.weight += OUT_PROJ_FACTOR * 3.0 * out.lora_B.weight @ out.lora_A.weight
    torch.testing.assert_close(model(X), plain(X), atol=1e-5, rtol=0)
    assert OUT_PROJ_FACTOR == 2.0  # change together with the PEFT version the interop tests pin


def test_training_reaches_all_factors_and_leaves_the_base_alone() -> None:
    reference = base_model()
    model = dt.wrap(base_model(), dt.LoraConfig(target_modules=["mha"], r=2, lora_dropout=0.5))
    randomize(model)
    model.train()
    out = model(X)
    torch.testing.assert_close(model(X), out, atol=0, rtol=0)  # no dropout on merged weights (as PEFT)
    out.pow(2).mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert len(grads) == 4 and all(g is not None and g.abs().sum() > 0 for g in grads.values()), grads.keys()
    mha = model.model.mha.base_layer
    assert isinstance(mha.in_proj_weight, nn.Parameter) and isinstance(mha.out_proj.weight, nn.Parameter)
    assert mha.in_proj_weight.grad is None and not mha.in_proj_weight.requires_grad
    assert torch.equal(mha.in_proj_weight, reference.mha.in_proj_weight)
    assert torch.equal(mha.out_proj.weight, reference.mha.out_proj.weight)


def test_weights_come_back_when_the_attention_raises() -> None:
    model = dt.wrap(base_model(), dt.LoraConfig(target_modules=["mha"], init_lora_weights=False))
    mha = model.model.mha
    stored = mha.base_layer.in_proj_weight
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        mha(torch.randn(2, 3, 16), torch.randn(2, 4, 7), torch.randn(2, 4, 7))  # wrong key size
    assert mha.base_layer._parameters["in_proj_weight"] is stored


def test_merge_unmerge_and_two_adapters() -> None:
    reference = base_model()
    model = dt.wrap(base_model(), dt.LoraConfig(target_modules=["mha"], r=2), "a")
    model.add_adapter("b", dt.LoraConfig(target_modules=["mha", "lin1"], r=3, lora_alpha=5))
    randomize(model)
    model.set_adapter(["a", "b"])
    model.eval()
    both = model(X)
    model.set_adapter("a")
    only_a = model(X)
    assert not torch.allclose(both, only_a, atol=1e-4)
    model.set_adapter(["a", "b"])
    model.merge_adapter(["b"])  # LoRA updates commute: merging the outer one alone is exact
    torch.testing.assert_close(model(X), both, atol=1e-5, rtol=0)
    model.merge_adapter()
    torch.testing.assert_close(model(X), both, atol=1e-5, rtol=0)
    with model.disable_adapters():
        torch.testing.assert_close(model(X), reference(X), atol=1e-5, rtol=0)
    model.unmerge_adapter()
    for name, param in model.model.mha.base_layer.named_parameters():
        torch.testing.assert_close(param, reference.mha.get_parameter(name), atol=1e-6, rtol=0)
    torch.testing.assert_close(model(X), both, atol=1e-5, rtol=0)
    plain = model.merge_and_unload()
    assert type(plain.mha) is nn.MultiheadAttention
    assert isinstance(plain.mha.in_proj_weight, nn.Parameter)
    torch.testing.assert_close(plain(X), both, atol=1e-5, rtol=0)


def test_self_attention_fast_path_and_encoder_layer() -> None:
    """Eval-mode fused kernels: MHA's own (reads the substituted weights) and TransformerEncoderLayer's
    (skips the attention's forward, so the adapter keeps it off)."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True).eval()
    x = torch.randn(2, 5, 16)
    model = dt.wrap(copy.deepcopy(layer), dt.LoraConfig(target_modules=["self_attn"], init_lora_weights=False))
    model.eval()
    with torch.no_grad():
        unmerged = model(x)
        attn = model.model.self_attn
        self_attention = attn(x, x, x, need_weights=False)[0]
        model.merge_adapter()
        merged = model(x)  # plain MHA with merged weights: the fused paths are free to run
        torch.testing.assert_close(attn(x, x, x, need_weights=False)[0], self_attention, atol=1e-5, rtol=0)
        model.unmerge_adapter()
        base = layer(x)
    assert not torch.allclose(unmerged, base, atol=1e-3), "the adapter must act inside the encoder layer"
    torch.testing.assert_close(unmerged, merged, atol=1e-5, rtol=0)


def test_bf16_base() -> None:
    model = dt.wrap(base_model().to(torch.bfloat16), dt.LoraConfig(target_modules=["mha"], init_lora_weights=False))
    adapter = model.model.mha.adapters["default"]
    assert adapter.lora_A.weight.dtype == torch.float32
    out = model(X.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert adapter.lora_B.weight.grad is not None


# ---------------------------------------------------------------- errors
def test_dora_on_attention_is_refused() -> None:
    with pytest.raises(dt.UnsupportedLayerError, match="DoRA.*MultiheadAttention"):
        dt.wrap(base_model(), dt.LoraConfig(target_modules=["mha"], use_dora=True))


def test_separate_key_value_sizes_are_refused() -> None:
    model = nn.Sequential()
    model.add_module("attn", nn.MultiheadAttention(16, 4, kdim=8, vdim=8))
    with pytest.raises(dt.UnsupportedLayerError, match="same size.*kdim=8"):
        dt.wrap(model, dt.LoraConfig(target_modules=["attn"]))


@pytest.mark.parametrize("targets", [["mha.out_proj"], ["mha", "out_proj"], "all-linear"])
def test_targeting_out_proj_is_refused(targets: list[str] | str) -> None:
    model = base_model()
    with pytest.raises(dt.ConfigError, match="out_proj of an nn.MultiheadAttention.*exclude_modules"):
        dt.wrap(model, dt.LoraConfig(target_modules=targets))
    assert not any(isinstance(m, dt.AdaptedLayer) for m in model.modules())
    ok = dt.wrap(model, dt.LoraConfig(target_modules="all-linear", exclude_modules=["out_proj"]))
    assert [n for n, _ in ok.adapted_layers()] == ["lin0", "lin1"]


def test_weight_decomposing_init_is_refused_before_any_weight_changes() -> None:
    model = base_model()
    before = model.lin1.weight.clone()
    with pytest.raises(dt.UnsupportedLayerError, match="MultiheadAttention"):
        dt.wrap(model, dt.LoraConfig(target_modules=["lin1", "mha"], init_lora_weights="pissa", r=2))
    assert torch.equal(model.lin1.weight, before)


def test_mixed_batch_is_refused_with_a_clear_error() -> None:
    model = dt.wrap(base_model(), dt.LoraConfig(target_modules=["mha"]))
    model.add_adapter("other", dt.LoraConfig(target_modules=["mha"]))
    with pytest.raises(dt.DeltatuneError, match="mixed batch.*LoraMultiheadAttention"):
        model(X, adapter_names=["default", "other", dt.BASE])


def test_conversion_to_plain_lora_covers_out_proj(tmp_path: Path) -> None:
    """save_pretrained(..., path_initial_model_for_weight_conversion) doubles the rank of both factor pairs."""
    model = dt.wrap(base_model(), dt.LoraConfig(target_modules=["mha"], r=2))
    model.save_pretrained(tmp_path / "init")
    randomize(model)
    expected = model(X)
    with pytest.warns(UserWarning, match="did not change the base"):
        model.save_pretrained(tmp_path / "conv", path_initial_model_for_weight_conversion=tmp_path / "init")
    shapes = keys(tmp_path / "conv")
    assert shapes["base_model.model.mha.base_layer.out_proj.lora_A.weight"] == (4, 16)
    loaded = dt.DeltaModel.from_pretrained(base_model(), tmp_path / "conv")
    torch.testing.assert_close(loaded(X), expected, atol=1e-5, rtol=0)
