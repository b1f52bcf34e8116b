"""Several methods stacked on one layer, and several methods on different adapters of one model.

The first active adapter acts nearest the base (``set_adapter(["loha", "lora"])`` is LoRA over
LoHa); merging follows that order, so merged == unmerged, and unmerging unwinds newest first, so
the base weights come back. A merge that would reorder adapters which do not commute (LoRA alone
over an unmerged OFT) is refused and leaves the model untouched.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from tests.method_cases import METHOD_CASES
from tests.models import MODEL_CASES, ModelCase, tiny_llama

import deltatune as dt

CASES = {case.name: case for case in MODEL_CASES}


@dataclass(frozen=True)
class Stack:
    """Adapters on the same layers, innermost first: (adapter name, METHOD_CASES key)."""

    name: str
    layers: tuple[tuple[str, str], ...]
    skip: tuple[str, ...] = ()  # layer kinds where the stack cannot run

    def kinds(self) -> set[str]:
        return set.intersection(*(set(METHOD_CASES[key].kinds) for _, key in self.layers)) - set(self.skip)


STACKS = [
    Stack("lora_over_loha", (("loha", "LOHA"), ("lora", "LORA"))),
    Stack("lora_over_oft", (("oft", "OFT"), ("lora", "LORA"))),  # OFT is not additive
    Stack("ia3_over_lora", (("lora", "LORA"), ("ia3", "IA3"))),  # nor is IA3
    Stack("lora_over_ia3_over_loha", (("loha", "LOHA"), ("ia3", "IA3"), ("lora", "LORA"))),
    # OFT rotates a convolution's own filters, so on a convolution it refuses to run over another
    # unmerged adapter (tested below); on dense layers it rotates the input and stacks.
    Stack("oft_over_lokr", (("lokr", "LOKR"), ("oft", "OFT")), skip=("conv2d",)),
]
MATRIX = [
    pytest.param(stack, CASES[model], id=f"{stack.name}-{model}")
    for stack in STACKS
    for model in ("mlp", "conv2d", "gpt2_conv1d")
    if CASES[model].kind in stack.kinds()
]
ADDITIVE = {"LORA", "LOHA", "LOKR"}


def build(stack: Stack, case: ModelCase) -> tuple[torch.nn.Module, dt.DeltaModel]:
    """The base model (a copy) and the model with every adapter of ``stack`` active, random values."""
    base = case.make()
    reference = copy.deepcopy(base)
    model: dt.DeltaModel | None = None
    for i, (name, key) in enumerate(stack.layers):
        config = METHOD_CASES[key].config(case.targets, False, i)
        if model is None:
            model = dt.wrap(base, config, name)
        else:
            model.add_adapter(name, config)
    assert model is not None
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, key in stack.layers:
            if key == "IA3":  # scales near 1, so that unmerging (a division) stays exact to rounding
                for param in model.adapter_parameters(name):
                    param.copy_(1 + 0.3 * torch.randn(param.shape, generator=g))
    model.set_adapter([name for name, _ in stack.layers])
    return reference, model.eval()


def base_state(model: dt.DeltaModel) -> dict[str, torch.Tensor]:
    return {
        f"{path}.{p}": t.detach().clone()
        for path, layer in model.adapted_layers()
        for p, t in layer.base_layer.named_parameters()
    }


def assert_restored(model: dt.DeltaModel, before: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert all(not layer.merged for _, layer in model.adapted_layers())
    for key, value in base_state(model).items():
        torch.testing.assert_close(value, before[key], atol=atol, rtol=0, msg=key)


@pytest.mark.parametrize("stack,case", MATRIX)
def test_merge_all_equals_unmerged_and_unmerge_restores(stack: Stack, case: ModelCase) -> None:
    reference, model = build(stack, case)
    x = case.inputs(3)
    stacked = case.run(model, x)
    for name, _ in stack.layers:  # each adapter takes part
        model.set_adapter([n for n, _ in stack.layers if n != name])
        assert not torch.allclose(case.run(model, x), stacked, atol=1e-4), name
    model.set_adapter([n for n, _ in stack.layers])
    before = base_state(model)
    model.merge_adapter()
    assert [layer.merged for _, layer in model.adapted_layers()][0] == [n for n, _ in stack.layers]
    torch.testing.assert_close(case.run(model, x), stacked, atol=1e-5, rtol=1e-5)
    with model.disable_adapters():  # undone inside, merged again after
        torch.testing.assert_close(case.run(model, x), case.run(reference, x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(case.run(model, x), stacked, atol=1e-5, rtol=1e-5)
    model.unmerge_adapter()
    assert_restored(model, before)
    torch.testing.assert_close(case.run(model, x), stacked, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stack,case", MATRIX)
def test_merge_follows_activation_order_not_argument_order(stack: Stack, case: ModelCase) -> None:
    _, model = build(stack, case)
    x = case.inputs(2)
    stacked = case.run(model, x)
    names = [n for n, _ in stack.layers]
    model.merge_adapter(list(reversed(names)))
    for _, layer in model.adapted_layers():
        assert layer.merged == names
    torch.testing.assert_close(case.run(model, x), stacked, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stack,case", MATRIX)
def test_merge_of_a_subset(stack: Stack, case: ModelCase) -> None:
    """Every subset: merged == unmerged when it keeps non-commuting pairs in order, else a MergeError
    that changes nothing; unmerge restores the base weights either way."""
    _, model = build(stack, case)
    x = case.inputs(3)
    stacked = case.run(model, x)
    names = [n for n, _ in stack.layers]
    keys = dict(stack.layers)
    before = base_state(model)
    for size in range(1, len(names)):
        for subset in itertools.combinations(names, size):
            # Merged adapters act first: an unmerged adapter below a merged one swaps them.
            swapped = [
                (low, high) for low, high in itertools.combinations(names, 2) if high in subset and low not in subset
            ]
            ok = all(keys[low] in ADDITIVE and keys[high] in ADDITIVE for low, high in swapped)
            if ok:
                model.merge_adapter(list(subset))
                torch.testing.assert_close(case.run(model, x), stacked, atol=1e-5, rtol=1e-5, msg=str(subset))
                # then the rest, in a second call: the whole stack merged in two steps
                model.merge_adapter()
                torch.testing.assert_close(case.run(model, x), stacked, atol=1e-5, rtol=1e-5, msg=str(subset))
            else:
                now, out = base_state(model), case.run(model, x)
                with pytest.raises(dt.MergeError, match="do not commute"):
                    model.merge_adapter(list(subset))
                for key, value in base_state(model).items():
                    assert torch.equal(value, now[key]), (subset, key)
                assert torch.equal(case.run(model, x), out)
            model.unmerge_adapter()
            assert_restored(model, before)


@pytest.mark.parametrize("stack,case", MATRIX)
def test_merge_and_unload_and_training(stack: Stack, case: ModelCase) -> None:
    reference, model = build(stack, case)
    x = case.inputs(2)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    all_adapters = {id(p) for name, _ in stack.layers for p in model.adapter_parameters(name)}
    assert {id(p) for p in trainable} == all_adapters
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    case.run(model, x).float().pow(2).mean().backward()
    torch.optim.SGD(trainable, lr=1e-3).step()
    for name, _ in stack.layers:  # every method of the stack got a gradient and moved
        params = dict(model.named_parameters())
        assert any(not torch.equal(params[n], before[n]) for n in params if f"adapters.{name}." in n), (
            f"adapter {name} did not train"
        )
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, before[n]), n
    model.eval()
    stacked = case.run(model, x)
    plain = model.merge_and_unload()
    assert not any(isinstance(m, dt.AdaptedLayer) for m in plain.modules())
    torch.testing.assert_close(case.run(plain, x), stacked, atol=1e-5, rtol=1e-5)


def _single(build_model: Callable[[], torch.nn.Module], configs: dict[str, dt.AdapterConfig]) -> dt.DeltaModel:
    torch.manual_seed(0)
    names = list(configs)
    model = dt.wrap(build_model(), configs[names[0]], names[0])
    for name in names[1:]:
        model.add_adapter(name, configs[name])
    return model.eval()


def test_stacked_forward_is_the_composition() -> None:
    """On one Linear with a bias: LoRA over OFT adds B A x to the rotated layer; IA3 over LoRA
    scales the LoRA layer's output (bias included); LoRA over LoHa adds both deltas."""
    x = torch.randn(4, 10)

    def layer() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(10, 6))

    lora = dt.LoraConfig(target_modules=["0"], init_lora_weights=False)
    others: dict[str, dt.AdapterConfig] = {
        "oft": dt.OFTConfig(target_modules=["0"], r=2, oft_block_size=0, init_weights=False),
        "loha": dt.LoHaConfig(target_modules=["0"], init_weights=False),
    }
    for name, config in others.items():
        model = _single(layer, {name: config, "lora": lora})
        outs = {}
        for active in ([name], ["lora"], [name, "lora"]):
            model.set_adapter(active)
            outs[tuple(active)] = model(x)
        with model.disable_adapters():
            plain = model(x)
        torch.testing.assert_close(outs[(name, "lora")], outs[(name,)] + outs[("lora",)] - plain, atol=1e-5, rtol=0)
    model = _single(layer, {"lora": lora, "ia3": dt.IA3Config(target_modules=["0"], feedforward_modules=[])})
    with torch.no_grad():
        model.model[0].adapters["ia3"].ia3_l.copy_(torch.linspace(0.5, 1.5, 6).view(6, 1))
    model.set_adapter("lora")
    lora_out = model(x)
    model.set_adapter(["lora", "ia3"])
    torch.testing.assert_close(model(x), lora_out * torch.linspace(0.5, 1.5, 6), atol=1e-6, rtol=0)


def test_dora_over_another_adapter_refuses_inconsistent_merges() -> None:
    """DoRA normalises the stored weight but scales the output of the adapters below it: merging it
    or them would change its output, so that is refused; DoRA below another adapter merges fine."""
    case = CASES["mlp"]
    x = case.inputs(3)
    lora = dt.LoraConfig(target_modules=case.targets, init_lora_weights=False)
    dora = dt.LoraConfig(target_modules=case.targets, init_lora_weights=False, r=2, use_dora=True)
    model = _single(case.build, {"lora": lora, "dora": dora})
    before = base_state(model)
    model.set_adapter(["lora", "dora"])
    stacked = model(x)
    for subset in (None, ["lora"], ["dora"]):
        with pytest.raises(dt.MergeError, match="dora"):
            model.merge_adapter(subset)
        assert_restored(model, before, atol=0)
        torch.testing.assert_close(model(x), stacked, atol=0, rtol=0)
    model.set_adapter(["dora", "lora"])  # LoRA over DoRA: in order, it merges
    stacked = model(x)
    model.merge_adapter()
    torch.testing.assert_close(model(x), stacked, atol=1e-5, rtol=1e-5)
    model.unmerge_adapter()
    assert_restored(model, before)


def test_merging_an_inactive_adapter_goes_below_the_active_ones() -> None:
    case = CASES["mlp"]
    x = case.inputs(3)
    configs: dict[str, dt.AdapterConfig] = {
        "lora": dt.LoraConfig(target_modules=case.targets, init_lora_weights=False),
        "oft": METHOD_CASES["OFT"].config(case.targets, False, 0),
    }
    model = _single(case.build, configs)
    before = base_state(model)
    model.set_adapter(["lora", "oft"])
    with pytest.raises(dt.MergeError):
        model.merge_adapter(["oft"])  # OFT over an unmerged LoRA
    model.set_adapter("oft")
    model.merge_adapter(["lora"])  # folded into the base: OFT now rotates W0 + ΔW
    model.set_adapter(["lora", "oft"])
    expected = model(x)  # lora is merged, so only OFT runs on top of it
    model.unmerge_adapter()
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
    assert_restored(model, before)


# ---------------------------------------------------------------- several methods, several adapters
IDS = torch.randint(1, 64, (2, 7), generator=torch.Generator().manual_seed(5))


def _two_method_llama() -> tuple[torch.nn.Module, dt.DeltaModel]:
    torch.manual_seed(0)
    base = tiny_llama().eval()
    reference = copy.deepcopy(base)
    model = dt.wrap(base, dt.LoraConfig(target_modules=["q_proj", "v_proj"], init_lora_weights=False), "a")
    model.add_adapter(
        "b", dt.IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"])
    )
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.adapter_parameters("b"):
            param.copy_(1 + 0.3 * torch.randn(param.shape, generator=g))
    return reference, model.eval()


def test_lora_and_ia3_adapters_switch_save_and_load_back(tmp_path) -> None:
    reference, model = _two_method_llama()
    base_out = reference(IDS).logits
    outs = {}
    for active in ("a", "b", ("a", "b")):
        model.set_adapter(list(active) if isinstance(active, tuple) else active)
        outs[active] = model(IDS).logits
        assert not torch.allclose(outs[active], base_out, atol=1e-4), active
    assert not torch.allclose(outs["a"], outs["b"], atol=1e-4)
    assert not torch.allclose(outs[("a", "b")], outs["a"], atol=1e-4)
    with pytest.raises(dt.DeltatuneError, match="mixed batch"):  # only LoRA joins mixed batches
        model(IDS, adapter_names=["a", "b"])

    model.save_pretrained(tmp_path)
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "b" / "adapter_config.json").is_file()
    torch.manual_seed(0)
    loaded = dt.DeltaModel.from_pretrained(tiny_llama().eval(), tmp_path / "a", adapter_name="a")
    loaded.load_adapter(tmp_path / "b", adapter_name="b")
    assert isinstance(loaded.peft_config["a"], dt.LoraConfig) and isinstance(loaded.peft_config["b"], dt.IA3Config)
    for active in ("a", "b", ("a", "b")):
        loaded.set_adapter(list(active) if isinstance(active, tuple) else active)
        assert torch.equal(loaded(IDS).logits, outs[active]), active
    with loaded.disable_adapters():
        torch.testing.assert_close(loaded(IDS).logits, base_out, atol=0, rtol=0)

    # Both active, merged: v_proj holds IA3 over LoRA and merges in that order.
    before = base_state(loaded)
    loaded.merge_adapter()
    torch.testing.assert_close(loaded(IDS).logits, outs[("a", "b")], atol=1e-5, rtol=1e-5)
    loaded.unmerge_adapter()
    assert_restored(loaded, before)
    loaded.set_adapter(["b", "a"])  # now LoRA over IA3: another model, still consistent when merged
    swapped = loaded(IDS).logits
    assert not torch.allclose(swapped, outs[("a", "b")], atol=1e-4)
    loaded.merge_adapter()
    torch.testing.assert_close(loaded(IDS).logits, swapped, atol=1e-5, rtol=1e-5)
    loaded.unmerge_adapter()
    assert_restored(loaded, before)


def test_merged_stack_saves_the_adapters_not_the_merge(tmp_path) -> None:
    _, model = _two_method_llama()
    model.set_adapter(["a", "b"])
    stacked = model(IDS).logits
    model.merge_adapter()
    model.save_pretrained(tmp_path, selected_adapters=["a", "b"])
    torch.manual_seed(0)
    loaded = dt.DeltaModel.from_pretrained(tiny_llama().eval(), tmp_path / "a", adapter_name="a")
    loaded.load_adapter(tmp_path / "b", adapter_name="b")
    loaded.set_adapter(["a", "b"])
    torch.testing.assert_close(loaded(IDS).logits, stacked, atol=1e-5, rtol=1e-5)


def test_oft_on_a_convolution_over_another_adapter() -> None:
    """OFT on a convolution rotates the stored filters: over an unmerged adapter it refuses to run;
    once the adapter below is merged, OFT rotates the merged filters and merges after it."""
    reference, model = build(Stack("s", (("lokr", "LOKR"), ("oft", "OFT"))), CASES["conv2d"])
    x = CASES["conv2d"].inputs(2)
    with pytest.raises(dt.DeltatuneError, match="cannot run on top of another active"):
        model(x)
    before = base_state(model)
    model.merge_adapter(["lokr"])
    stacked = model(x)
    model.merge_adapter()
    torch.testing.assert_close(model(x), stacked, atol=1e-5, rtol=1e-5)
    model.unmerge_adapter()
    assert_restored(model, before)
