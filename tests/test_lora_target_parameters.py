"""LoRA on raw parameters (LoraConfig.target_parameters): PEFT's keys and outputs both ways, errors.

The invariant matrix covers a custom fused-experts model (tests/models.py "experts" case); here:
interop with PEFT on it, on a module storing (experts, in, out) (``is_transposed``) and on a tiny
transformers Mixtral, and the bad inputs. PEFT is only imported here, as the reference.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from tests.models import ExpertsModel
from torch import nn

import deltatune as dt

peft = pytest.importorskip("peft")


class TransposedExperts(nn.Module):
    """Experts stored as (experts, in, out) and applied as x @ W, flagged the transformers way."""

    is_transposed = True

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Parameter(torch.randn(2, 8, 5) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("...i,eio->...o", x, self.up)


class TransposedModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.experts = TransposedExperts()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.experts(x)


def tiny_mixtral() -> nn.Module:
    from transformers import MixtralConfig, MixtralForCausalLM

    cfg = MixtralConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=64,
    )
    return MixtralForCausalLM(cfg)


FLOATS = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(0))
IDS = torch.randint(1, 64, (2, 7), generator=torch.Generator().manual_seed(1))
CASES: dict[str, tuple[Any, Any, dict[str, Any]]] = {
    "experts 3-D + 2-D": (
        ExpertsModel,
        FLOATS,
        dict(target_modules=[], target_parameters=["experts.gate_up_proj", "down_proj", "proj.weight"], r=2),
    ),
    "experts, rslora, no target_modules": (
        ExpertsModel,
        FLOATS,
        dict(target_parameters=["gate_up_proj"], r=3, lora_alpha=5, use_rslora=True),
    ),
    "is_transposed": (TransposedModel, FLOATS, dict(target_parameters=["experts.up"], r=2)),
    "mixtral + q_proj": (
        tiny_mixtral,
        IDS,
        dict(target_modules=["q_proj"], target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"], r=2),
    ),
}


def fresh(build: Any) -> nn.Module:
    torch.manual_seed(0)
    return build().eval()


def run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out.logits if hasattr(out, "logits") else out


def randomize(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.3)


def keys(folder: Path) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in load_file(folder / "adapter_model.safetensors").items()}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_peft_adapter_loads_with_the_same_outputs(case: tuple, tmp_path: Path) -> None:
    build, x, kwargs = case
    theirs = peft.get_peft_model(fresh(build), peft.LoraConfig(**kwargs)).eval()
    randomize(theirs, seed=1)
    expected = run(theirs, x)
    assert not torch.allclose(expected, run(fresh(build), x), atol=1e-3)
    theirs.save_pretrained(tmp_path)
    ours = dt.DeltaModel.from_pretrained(fresh(build), tmp_path).eval()
    torch.testing.assert_close(run(ours, x), expected, atol=1e-5, rtol=0)
    ours.merge_adapter()
    torch.testing.assert_close(run(ours, x), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_deltatune_adapter_loads_in_peft_with_the_same_outputs_and_keys(case: tuple, tmp_path: Path) -> None:
    build, x, kwargs = case
    ours = dt.wrap(fresh(build), dt.LoraConfig(**kwargs)).eval()
    randomize(ours, seed=2)
    expected = run(ours, x)
    ours.save_pretrained(tmp_path / "ours")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = peft.PeftConfig.from_pretrained(tmp_path / "ours")
    assert config.target_parameters == kwargs["target_parameters"]
    wanted = kwargs.get("target_modules")  # not filled with the names of the parameters' modules
    assert config.target_modules is None if wanted is None else set(config.target_modules) == set(wanted)
    theirs = peft.PeftModel.from_pretrained(fresh(build), tmp_path / "ours").eval()
    torch.testing.assert_close(run(theirs, x), expected, atol=1e-5, rtol=0)
    peft.get_peft_model(fresh(build), peft.LoraConfig(**kwargs)).save_pretrained(tmp_path / "peft")
    assert keys(tmp_path / "ours") == keys(tmp_path / "peft")


def test_checkpoint_keys_nest_like_peft(tmp_path: Path) -> None:
    """The parameter registered first is innermost: its factors sit under ``base_layer.``."""
    model = dt.wrap(ExpertsModel(), dt.LoraConfig(target_parameters=["gate_up_proj", "down_proj"], r=2))
    model.save_pretrained(tmp_path)
    assert keys(tmp_path) == {
        "base_model.model.experts.base_layer.lora_A.weight": (6, 8),  # gate_up (3, 12, 8): r * experts rows
        "base_model.model.experts.base_layer.lora_B.weight": (12, 6),
        "base_model.model.experts.lora_A.weight": (6, 6),  # down (3, 8, 6)
        "base_model.model.experts.lora_B.weight": (8, 6),
    }


def test_update_rule_per_expert() -> None:
    """W'[e] = W[e] + s B_e A_e with A_e = rows e r..e r+r-1 of lora_A and B_e = columns e, E+e, ... of lora_B."""
    model = dt.wrap(ExpertsModel(), dt.LoraConfig(target_parameters=["gate_up_proj"], r=2, lora_alpha=6))
    randomize(model, seed=3)
    adapter = model.model.experts.adapters["default"]
    a, b = adapter.lora_A.weight, adapter.lora_B.weight
    delta = adapter.delta_weight()
    for e in range(3):
        torch.testing.assert_close(delta[e], 3.0 * b[:, e::3] @ a[2 * e : 2 * e + 2], atol=1e-6, rtol=0)


def test_two_adapters_on_the_same_parameters_add_and_merge() -> None:
    base = ExpertsModel().eval()
    reference = copy.deepcopy(base)
    targets = ["experts.gate_up_proj", "down_proj"]
    model = dt.wrap(base, dt.LoraConfig(target_parameters=targets, init_lora_weights=False), "a")
    model.add_adapter("b", dt.LoraConfig(target_parameters=targets, r=3, init_lora_weights=False))
    model.set_adapter(["a", "b"])
    model.eval()
    both = model(FLOATS)
    model.set_adapter("a")
    assert not torch.allclose(model(FLOATS), both, atol=1e-4)
    model.set_adapter(["a", "b"])
    model.merge_adapter(["b"])
    torch.testing.assert_close(model(FLOATS), both, atol=1e-5, rtol=0)
    model.merge_adapter()
    torch.testing.assert_close(model(FLOATS), both, atol=1e-5, rtol=0)
    model.unmerge_adapter()
    experts = model.model.experts.base_layer
    torch.testing.assert_close(experts.gate_up_proj, reference.experts.gate_up_proj, atol=1e-6, rtol=0)
    assert isinstance(experts.gate_up_proj, nn.Parameter) and not experts.gate_up_proj.requires_grad
    with pytest.raises(dt.DeltatuneError, match="mixed batch.*LoraParameter"):
        model(FLOATS, adapter_names=["a", "b", dt.BASE])


# ---------------------------------------------------------------- bad input
def test_a_name_matching_no_parameter_lists_the_closest() -> None:
    model = ExpertsModel()
    with pytest.raises(dt.TargetError, match=r"'experts.gate_up_prj' matches no parameter.*experts.gate_up_proj"):
        dt.wrap(model, dt.LoraConfig(target_parameters=["experts.gate_up_prj"]))
    assert not any(isinstance(m, dt.AdaptedLayer) for m in model.modules())


@pytest.mark.parametrize(
    "kwargs,bad",
    [
        (dict(lora_dropout=0.1), "lora_dropout"),
        (dict(use_dora=True), "use_dora"),
        (dict(init_lora_weights="pissa"), "init_lora_weights"),
        (dict(fan_in_fan_out=True), "fan_in_fan_out"),
    ],
)
def test_impossible_combinations_raise(kwargs: dict, bad: str) -> None:
    with pytest.raises(dt.ConfigError, match=f"target_parameters cannot be combined with.*{bad}"):
        dt.LoraConfig(target_parameters=["gate_up_proj"], **kwargs)


def test_bad_target_parameters_values() -> None:
    with pytest.raises(dt.ConfigError, match="list of parameter names"):
        dt.LoraConfig(target_parameters="gate_up_proj")  # type: ignore[arg-type]


def test_a_module_targeted_both_ways_is_refused() -> None:
    with pytest.raises(dt.ConfigError, match=r"\['proj'\].*target_modules and own parameters"):
        dt.wrap(ExpertsModel(), dt.LoraConfig(target_modules=["proj"], target_parameters=["proj.weight"]))


def test_a_vector_parameter_is_refused() -> None:
    with pytest.raises(dt.UnsupportedLayerError, match=r"proj.bias, a 1-D.*2-D \(out, in\) and 3-D"):
        dt.wrap(ExpertsModel(), dt.LoraConfig(target_parameters=["proj.bias"]))
