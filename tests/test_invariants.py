"""The invariant matrix: every registered method x every layer type it supports."""

from __future__ import annotations

import copy

import pytest
import torch
from tests.method_cases import METHOD_CASES, MethodCase
from tests.models import MODEL_CASES, ModelCase

import deltatune as dt

MATRIX = [
    pytest.param(method, model, id=f"{key}-{model.name}")
    for key, method in METHOD_CASES.items()
    for model in MODEL_CASES
    if model.kind in method.kinds
]
MIXED = [p for p in MATRIX if p.values[0].mixed_batches]


def test_every_registered_method_has_cases() -> None:
    # Variants of a method (e.g. LoRA with DoRA) are extra cases of the same peft_type.
    # Whole-model prompt methods (Method.create_prompt) adapt no layer; tests/test_prompt_*.py has their matrix.
    layer_methods = {k for k, m in dt.registered_methods().items() if m.create_prompt is None}
    assert layer_methods == {case.peft_type for case in METHOD_CASES.values()}


def _wrapped(method: MethodCase, case: ModelCase, identity: bool = False, variant: int = 0):
    base = case.make()
    reference = copy.deepcopy(base)
    model = dt.wrap(base, method.config(case.targets, identity, variant))
    if not identity and method.randomize is not None:
        method.randomize(model)
    return reference, model.eval()


@pytest.mark.parametrize("method,case", MATRIX)
def test_identity_init_equals_base(method: MethodCase, case: ModelCase) -> None:
    reference, model = _wrapped(method, case, identity=True)
    x = case.inputs(3)
    torch.testing.assert_close(case.run(model, x), case.run(reference, x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("method,case", MATRIX)
def test_random_adapter_changes_output_and_disable_restores_base(method: MethodCase, case: ModelCase) -> None:
    reference, model = _wrapped(method, case)
    x = case.inputs(3)
    base_out = case.run(reference, x)
    assert not torch.allclose(case.run(model, x), base_out, atol=1e-4), "a random adapter must change the output"
    with model.disable_adapters():
        torch.testing.assert_close(case.run(model, x), base_out, atol=0, rtol=0)
    assert not torch.allclose(case.run(model, x), base_out, atol=1e-4), "leaving the block re-enables"


@pytest.mark.parametrize("method,case", MATRIX)
def test_merge_equals_unmerged_and_unmerge_restores(method: MethodCase, case: ModelCase) -> None:
    reference, model = _wrapped(method, case)
    if not method.mergeable:
        with pytest.raises(dt.MergeError):
            model.merge_adapter()
        return
    x = case.inputs(3)
    adapted = case.run(model, x)
    model.merge_adapter()
    torch.testing.assert_close(case.run(model, x), adapted, atol=1e-5, rtol=1e-5)
    with model.disable_adapters():  # merged adapters are undone inside the block
        torch.testing.assert_close(case.run(model, x), case.run(reference, x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(case.run(model, x), adapted, atol=1e-5, rtol=1e-5)
    model.unmerge_adapter()
    torch.testing.assert_close(case.run(model, x), adapted, atol=1e-5, rtol=1e-5)
    base_weights = dict(reference.named_parameters(remove_duplicate=False))  # tied weights under each name
    for name, layer in model.adapted_layers():
        for pname, param in layer.base_layer.named_parameters():
            torch.testing.assert_close(param, base_weights[f"{name}.{pname}"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("method,case", MATRIX)
def test_merge_and_unload_gives_plain_model(method: MethodCase, case: ModelCase) -> None:
    _, model = _wrapped(method, case)
    if not method.mergeable:
        return
    x = case.inputs(2)
    adapted = case.run(model, x)
    plain = model.merge_and_unload()
    assert not any(isinstance(m, dt.AdaptedLayer) for m in plain.modules())
    torch.testing.assert_close(case.run(plain, x), adapted, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method,case", MATRIX)
def test_save_load_is_bit_exact(method: MethodCase, case: ModelCase, tmp_path) -> None:
    _, model = _wrapped(method, case)
    x = case.inputs(3)
    adapted = case.run(model, x)
    model.save_pretrained(tmp_path)
    loaded = dt.DeltaModel.from_pretrained(case.make(), tmp_path).eval()
    assert torch.equal(case.run(loaded, x), adapted)
    saved = {n: p for n, p in model.named_parameters() if "adapters" in n}
    for name, param in loaded.named_parameters():
        if name in saved:
            assert torch.equal(param, saved[name]), name
    assert not any(p.requires_grad for p in loaded.parameters()), "is_trainable=False freezes the adapter"


@pytest.mark.parametrize("method,case", MATRIX)
def test_only_adapter_parameters_train(method: MethodCase, case: ModelCase) -> None:
    reference, model = _wrapped(method, case)
    adapter_ids = {id(p) for p in model.adapter_parameters("default")}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and {id(p) for p in trainable} == adapter_ids
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    out = case.run(model, case.inputs(4))
    out.float().pow(2).mean().backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "an optimizer step must change the adapter"
    trainable_names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed <= trainable_names
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert param.grad is None, name


@pytest.mark.parametrize("method,case", MIXED)
def test_mixed_batch_equals_per_adapter_runs(method: MethodCase, case: ModelCase) -> None:
    reference, model = _wrapped(method, case, variant=0)
    model.add_adapter("other", method.config(case.targets, False, variant=1))
    model.add_adapter("third", method.config(case.targets, False, variant=2))
    x = case.inputs(5)
    names = ["other", "default", dt.BASE, "third", "other"]
    expected = []
    for i, name in enumerate(names):
        if name == dt.BASE:
            expected.append(case.run(reference, x[i : i + 1]))
        else:
            model.set_adapter(name)
            expected.append(case.run(model, x[i : i + 1]))
    mixed = case.run(model, x, adapter_names=names)
    torch.testing.assert_close(mixed, torch.cat(expected), atol=1e-5, rtol=1e-5)
