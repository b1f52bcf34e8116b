"""torch.compile: every method traces without graph breaks and the compiled model equals eager.

The checks use the ``aot_eager`` backend (TorchDynamo tracing plus AOTAutograd, no C++ code
generation), which is what decides graph breaks, guards and the traced backward; inductor only
changes how the traced graph is turned into kernels.

Caches that key on tensor storage (mixed-batch stacks, DoRA's eval-mode norm) are skipped while
compiling, so a compiled model neither guards on storage addresses nor recompiles every call.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo as dynamo
from torch._dynamo.testing import CompileCounter

import deltatune as dt
from method_cases import METHOD_CASES, MethodCase
from models import MODEL_CASES, ModelCase, tiny_llama

# The kinds that put each method on a whole small model (or its nearest stand-in).
_PREFERRED_KINDS = ("transformer", "llama_attention", "transformer_norm", "mha", "parameters", "conv2d", "linear")


def _case_for(method: MethodCase) -> ModelCase:
    for kind in _PREFERRED_KINDS:
        for case in MODEL_CASES:
            if case.kind == kind and kind in method.kinds:
                return case
    raise AssertionError(f"no model case for {method.peft_type}")


def _wrapped(key: str) -> tuple[dt.DeltaModel, ModelCase]:
    method = METHOD_CASES[key]
    case = _case_for(method)
    model = dt.wrap(case.make(), method.config(case.targets, False, 0))
    if method.randomize is not None:
        method.randomize(model)
    return model, case


def _output(case: ModelCase, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return case.run(model, x)


@pytest.mark.parametrize("key", sorted(METHOD_CASES))
def test_every_method_compiles_whole_and_equals_eager(key: str) -> None:
    """``fullgraph=True`` fails on any graph break; eval and train take different paths (caches, dropout)."""
    model, case = _wrapped(key)
    x = case.inputs(2)
    params = [p for p in model.parameters() if p.requires_grad]
    dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(_output(case, compiled, x), _output(case, model, x), atol=1e-5, rtol=1e-5)
    model.train()
    torch.manual_seed(0)  # dropout (where a case has it) draws the same masks in both runs
    eager = _output(case, model, x)
    eager_grads = torch.autograd.grad(eager.float().square().mean(), params)
    torch.manual_seed(0)
    traced = _output(case, compiled, x)
    traced_grads = torch.autograd.grad(traced.float().square().mean(), params)
    torch.testing.assert_close(traced, eager, atol=1e-5, rtol=1e-5)
    for g_traced, g_eager in zip(traced_grads, eager_grads, strict=True):
        torch.testing.assert_close(g_traced, g_eager, atol=1e-5, rtol=1e-4, msg=lambda m: f"{key}: {m}")


def _two_adapter_llama() -> dt.DeltaModel:
    torch.manual_seed(0)
    model = dt.wrap(tiny_llama(), dt.LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    model.add_adapter("b", dt.LoraConfig(r=2, target_modules="all-linear", init_lora_weights=False, use_dora=True))
    return model.eval()


def test_lifecycle_changes_reach_the_compiled_model() -> None:
    """Switching, disabling, merging and deleting adapters after compiling: the guards notice every change."""
    model = _two_adapter_llama()
    compiled = torch.compile(model, backend="aot_eager")
    ids = torch.randint(1, 64, (2, 9))

    def check() -> None:
        with torch.no_grad():
            torch.testing.assert_close(compiled(ids).logits, model(ids).logits, atol=1e-5, rtol=1e-5)

    check()
    model.set_adapter("b")
    check()
    with model.disable_adapters():
        check()
    model.merge_adapter()
    check()
    model.unmerge_adapter()
    check()
    model.set_adapter("default")
    model.delete_adapter("b")
    check()


def test_mixed_batch_compiles_once_per_set_of_adapters() -> None:
    """The names are read outside the graph: a new list over the same adapters reuses the graph."""
    model = _two_adapter_llama()
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter)
    ids = torch.randint(1, 64, (3, 9))

    def check(names: list[str]) -> None:
        torch.testing.assert_close(
            compiled(ids, adapter_names=names).logits, model(ids, adapter_names=names).logits, atol=1e-5, rtol=1e-5
        )

    with torch.no_grad():
        for names in (["b", "__base__", "default"], ["default", "b", "__base__"], ["__base__", "__base__", "b"]):
            check(names)
        frames = counter.frame_count
        for names in (["b", "default", "__base__"], ["__base__", "default", "b"], ["b", "b", "__base__"]):
            check(names)  # sets seen before: no new graph (no guard on cached stacks or on the list)
        assert counter.frame_count == frames
        with pytest.raises(dt.DeltatuneError, match="3 entries for a batch of 2"):
            compiled(ids[:2], adapter_names=["b", "default", "b"])
        # A weight edit (an optimizer step, a reload) is seen by the compiled model too.
        for p in model.adapter_parameters("b"):
            p.add_(0.1)
        check(["b", "__base__", "default"])


@pytest.mark.parametrize(
    "config",
    [
        dt.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
        dt.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
        dt.PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, encoder_hidden_size=16),
    ],
    ids=["prompt", "prefix", "p-tuning"],
)
def test_prompt_learning_traces_without_graph_breaks(config: dt.AdapterConfig) -> None:
    torch.manual_seed(0)
    model = dt.wrap(tiny_llama(), config)
    ids = torch.randint(1, 64, (2, 9))
    for training in (False, True):
        model.train(training)
        dynamo.reset()
        explained = dynamo.explain(model)(input_ids=ids, labels=ids)
        assert explained.graph_break_count == 0, [b.reason.splitlines()[0] for b in explained.break_reasons]
