"""bf16 autocast on the CPU and gradient checkpointing, each through ``fit`` on a tiny transformers model.

test_training_loop.py checks that both switch on and train; here: bf16 really computes the base layers in
bf16 during training and evaluation and leaves the model as it was after ``fit``; checkpointing really
recomputes the forward in backward and trains the same adapter as without it (dropout on).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tests.test_training_loop import Regression, quiet, sgd_train
from torch import nn

import deltatune as dt
from deltatune.training import fit
from deltatune.training.config import EvalConfig


class Classify(Regression):
    higher_is_better = frozenset()

    def collate(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.tensor([r["ids"] for r in rows]), "labels": torch.tensor([r["y"] for r in rows])}

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["labels"])

    def loss_sum(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"]).logits.float()
        return nn.functional.cross_entropy(logits, batch["labels"], reduction="sum")

    def evaluate(self, model: nn.Module, rows: Sequence[dict[str, Any]], batch_size: int) -> dict[str, float]:
        batch = self.collate(rows)
        return {"loss": float(self.loss_sum(model, batch) / self.count(batch))}


DATA = [{"ids": [(i * 7 + j) % 60 + 1 for j in range(8)], "y": i % 3} for i in range(8)]


def lora_bert() -> nn.Module:
    from tests.models import tiny_bert_cls

    torch.manual_seed(0)  # the base keeps BERT's dropout 0.1; LoRA's is 0.1 too
    config = dt.LoraConfig(r=2, target_modules=["query", "value"], lora_dropout=0.1, init_lora_weights=False)
    return dt.wrap(tiny_bert_cls(), config)


def trained(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_bf16_autocast_runs_the_base_in_bf16_and_leaves_the_model_as_it_was(tmp_path: Path) -> None:
    model = lora_bert()
    dense = model.get_submodule("model.bert.encoder.layer.0.intermediate.dense")  # not adapted
    seen: list[tuple[bool, torch.dtype]] = []
    dense.register_forward_hook(lambda m, args, out: seen.append((m.training, out.dtype)))
    before = trained(model)
    cfg = sgd_train(max_steps=2, batch_size=4, mixed_precision="bf16", lr=1e-2)
    fit(model, Classify(), DATA, DATA[:4], cfg, EvalConfig(every=1, metric="loss"), quiet(), tmp_path)
    assert [dtype for training, dtype in seen if training] == [torch.bfloat16] * 2  # the two training steps
    assert [dtype for training, dtype in seen if not training] == [torch.bfloat16] * 2  # the two evaluations
    after = trained(model)
    assert all(after[n].dtype == torch.float32 and not torch.equal(after[n], p) for n, p in before.items())

    seen.clear()  # after fit: the model's own forward again, in fp32, outside any autocast
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([DATA[0]["ids"]])).logits
    assert seen == [(False, torch.float32)] and logits.dtype == torch.float32
    assert "_original_forward" not in model.__dict__


def test_gradient_checkpointing_recomputes_and_trains_the_same_adapter(tmp_path: Path) -> None:
    def run(checkpointing: bool) -> tuple[dict[str, torch.Tensor], int]:
        model = lora_bert()
        dense = model.get_submodule("model.bert.encoder.layer.0.intermediate.dense")
        calls = [0]

        def count(m: nn.Module, args: Any, out: Any) -> None:
            calls[0] += int(m.training)

        dense.register_forward_hook(count)
        cfg = sgd_train(max_steps=2, batch_size=4, gradient_checkpointing=checkpointing, optimizer="adamw")
        fit(model, Classify(), DATA, [], cfg, EvalConfig(), quiet(), tmp_path / str(checkpointing))
        return trained(model), calls[0]

    plain, plain_calls = run(False)
    recomputed, recomputed_calls = run(True)
    assert (plain_calls, recomputed_calls) == (2, 4)  # each step's forward runs again in backward
    for name, tensor in plain.items():  # the recomputation replays the same dropout masks
        torch.testing.assert_close(recomputed[name], tensor, rtol=0, atol=1e-6, msg=name)
