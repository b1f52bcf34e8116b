"""The fused LoRA node and in-place mixed accumulation compute what the generic path computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deltatune as dt
from deltatune import weights
from deltatune.methods.lora import fused


def _model(bias: bool, **kw) -> dt.DeltaModel:
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(16, 12, bias=bias), nn.Tanh(), nn.Linear(12, 8))
    return dt.wrap(base, dt.LoraConfig(target_modules=["0", "2"], r=4, init_lora_weights=False, **kw))


def _grads(model: dt.DeltaModel, x: torch.Tensor, g: torch.Tensor) -> list[torch.Tensor]:
    for p in model.parameters():
        p.grad = None
    x = x.clone().requires_grad_(True)
    out = model(x)
    out.backward(g)
    return [out.detach(), x.grad] + [p.grad for p in model.adapter_parameters("default")]


@pytest.mark.parametrize("bias", [True, False])
def test_fused_node_matches_generic_path(bias: bool, monkeypatch) -> None:
    model = _model(bias).train()
    x = torch.randn(3, 5, 16)
    g = torch.randn(3, 5, 8)
    calls = []
    real = fused.FusedLoraLinear.apply
    monkeypatch.setattr(fused.FusedLoraLinear, "apply", lambda *a: calls.append(1) or real(*a))
    fast = _grads(model, x, g)
    assert len(calls) == 2, "both layers take the fused node"
    monkeypatch.setattr(weights, "fusable_linear", lambda *a: False)
    slow = _grads(model, x, g)
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_fused_node_is_skipped_when_something_could_observe_the_base(monkeypatch) -> None:
    calls = []
    real = fused.FusedLoraLinear.apply
    monkeypatch.setattr(fused.FusedLoraLinear, "apply", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(2, 16)
    seen = []
    model = _model(True)
    model.model[0].base_layer.register_forward_hook(lambda m, i, o: seen.append(o))
    model(x)
    assert len(seen) == 1 and len(calls) == 1  # the hooked layer runs its base; the other fuses
    model = _model(True, lora_dropout=0.1)
    model(x)
    assert len(calls) == 1  # dropout: generic path
    model = _model(True)
    model.model[2].base_layer.weight.requires_grad_(True)  # a trained base weight needs its grad
    model(x).sum().backward()
    assert model.model[2].base_layer.weight.grad is not None


def test_mixed_batch_in_place_path_matches_out_of_place_path(monkeypatch) -> None:
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 8))
    model = dt.wrap(base, dt.LoraConfig(target_modules=["0", "2"], r=4, init_lora_weights=False))
    model.add_adapter("b", dt.LoraConfig(target_modules=["0", "2"], r=2, init_lora_weights=False))
    model.set_adapter(["default", "b"])  # both train
    model.train()
    x = torch.randn(4, 3, 16)
    names = ["b", "default", dt.BASE, "b"]

    def run() -> list[torch.Tensor]:
        for p in model.parameters():
            p.grad = None
        out = model(x, adapter_names=names)
        out.pow(2).sum().backward()
        return [out.detach()] + [p.grad for p in model.parameters() if p.requires_grad]

    fast = run()
    monkeypatch.setattr(weights, "output_is_free", lambda *a: False)
    slow = run()
    assert len(fast) == len(slow) == 1 + 8
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_fast_paths_under_bf16_autocast_match_generic_path(monkeypatch) -> None:
    model = _model(True).train()
    model.add_adapter("b", dt.LoraConfig(target_modules=["0", "2"], r=2, init_lora_weights=False))
    x = torch.randn(3, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        single = model(x)
        mixed = model(x, adapter_names=["b", "default", dt.BASE])
    monkeypatch.setattr(weights, "fusable_linear", lambda *a: False)
    monkeypatch.setattr(weights, "output_is_free", lambda *a: False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(model(x), single)
        torch.testing.assert_close(model(x, adapter_names=["b", "default", dt.BASE]), mixed)


def _two_adapters() -> dt.DeltaModel:
    model = _model(True)
    model.add_adapter("b", dt.LoraConfig(target_modules=["0", "2"], r=2, init_lora_weights=False))
    return model.eval()


def _per_adapter(model: dt.DeltaModel, x: torch.Tensor, names: list[str]) -> torch.Tensor:
    """The reference: each sample run alone with its adapter active."""
    rows = []
    for i, name in enumerate(names):
        model.set_adapter(name)
        rows.append(model(x[i : i + 1]))
    return torch.cat(rows)


@torch.no_grad()
def test_mixed_stack_cache_never_serves_stale_factors() -> None:
    """Inference reuses the stacked factors; every way of changing a factor must rebuild them."""
    model = _two_adapters()
    x = torch.randn(4, 16)
    names = ["default", "b", "b", "default"]

    def check() -> None:
        torch.testing.assert_close(model(x, adapter_names=names), _per_adapter(model, x, names), atol=1e-5, rtol=0)

    check()
    layer = model.model[0]
    assert "_mixed_stack" in layer.adapters["default"].__dict__, "inference caches the stacks"
    layer.adapters["b"].lora_B.weight.mul_(3.0)  # in place, as an optimizer step (version counter)
    check()
    state = {k: torch.randn_like(v) for k, v in layer.adapters["default"].state_dict().items()}
    layer.adapters["default"].load_state_dict(state)  # copied in
    check()
    layer.adapters["b"].lora_A.weight = nn.Parameter(torch.randn_like(layer.adapters["b"].lora_A.weight))  # replaced
    check()
    layer.adapters["b"].lora_A.weight.data = torch.randn_like(layer.adapters["b"].lora_A.weight)  # new storage
    check()
    layer.adapters["b"].scaling *= 0.5  # a changed scale
    check()
    model.delete_adapter("b")  # a new adapter under the old name
    model.add_adapter("b", dt.LoraConfig(target_modules=["0", "2"], r=2, init_lora_weights=False))
    model.eval()
    check()


def test_mixed_batch_with_autograd_sees_live_parameters() -> None:
    model = _two_adapters()
    x = torch.randn(4, 16)
    names = ["default", "b", "b", "default"]
    model.set_adapter(["default", "b"])  # both trainable
    with torch.no_grad():
        model(x, adapter_names=names)  # fills the cache
    out = model(x, adapter_names=names)
    out.sum().backward()
    grads = [p.grad for p in model.adapter_parameters("b")]
    assert all(g is not None and g.abs().sum() > 0 for g in grads), "gradients reach the live factors"


@pytest.mark.parametrize("bias", [True, False])
def test_inference_over_many_tokens_uses_the_merged_weight(bias: bool, monkeypatch) -> None:
    """Without autograd and with tokens many next to the layer's width, a dense LoRA layer runs one
    GEMM with W + s B A; with few tokens it keeps the factored node. Both equal the generic path."""
    model = _model(bias).eval()
    calls = []
    real = fused.FusedLoraLinear.apply
    monkeypatch.setattr(fused.FusedLoraLinear, "apply", lambda *a: calls.append(1) or real(*a))
    many, few = torch.randn(4, 30, 16), torch.randn(1, 2, 16)  # 120 tokens: merged; 2 tokens: factored
    with torch.no_grad():
        fast_many, fast_few = model(many), model(few)
    assert len(calls) == 2, "only the 2-token call takes the factored node (once per layer)"
    monkeypatch.setattr(weights, "fusable_linear", lambda *a: False)
    with torch.no_grad():
        torch.testing.assert_close(fast_many, model(many), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(fast_few, model(few), atol=1e-6, rtol=1e-6)


def test_merged_inference_of_a_zero_adapter_is_exactly_the_base() -> None:
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 8))
    x = torch.randn(4, 30, 16)
    with torch.no_grad():
        expected = base(x)
        model = dt.wrap(base, dt.LoraConfig(target_modules=["0", "2"], r=4)).eval()  # B = 0
        assert torch.equal(model(x), expected)
