"""The training loop on toy tasks: accumulation, schedule, hooks, early stopping, precision, records."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from deltatune.training import Hooks, RecipeError, StepInfo, fit
from deltatune.training.config import EvalConfig, OutputConfig, TrainConfig
from deltatune.training.loop import lr_factor
from deltatune.training.state import Progress, checkpoints, save_checkpoint


class Regression:
    """y = w.x with a per-row weight: the loss sum over items is what the loop must average."""

    higher_is_better = frozenset({"neg_mse"})

    def __init__(self, items_per_row: bool = False) -> None:
        self.items_per_row = items_per_row  # each row counts as row["n"] items (like target tokens)

    def collate(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {
            "x": torch.tensor([r["x"] for r in rows]),
            "y": torch.tensor([r["y"] for r in rows]),
            "n": torch.tensor([r["n"] if self.items_per_row else 1 for r in rows], dtype=torch.float),
        }

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["n"].sum())

    def loss_sum(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return ((model(batch["x"]).squeeze(-1) - batch["y"]) ** 2 * batch["n"]).sum()

    def evaluate(self, model: nn.Module, rows: Sequence[dict[str, Any]], batch_size: int) -> dict[str, float]:
        batch = self.collate(rows)
        mse = float(self.loss_sum(model, batch) / self.count(batch))
        return {"loss": mse, "neg_mse": -mse}


def rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    counts = torch.randint(1, 9, (n,), generator=g)
    return [{"x": x[i].tolist(), "y": float(y[i]), "n": int(counts[i])} for i in range(n)]


def linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(3, 1)


def quiet(**kw: Any) -> OutputConfig:
    return OutputConfig(**{"save_every": 0, "log_every": 1, "progress": False, **kw})


def sgd_train(**kw: Any) -> TrainConfig:
    # constant LR, no warmup or clipping, no decay: one step's update shows the gradient directly
    settings = dict(lr=0.1, weight_decay=0.0, warmup=0, schedule="constant", max_grad_norm=0, seed=0)
    return TrainConfig(**{**settings, **kw})  # type: ignore[arg-type]


def one_step(tmp_path: Path, data: list[dict[str, Any]], task: Regression, **kw: Any) -> nn.Module:
    model = linear()
    fit(model, task, data, [], sgd_train(max_steps=1, **kw), EvalConfig(), quiet(), tmp_path / str(kw))
    return model


@pytest.mark.parametrize("items_per_row", [False, True], ids=["examples", "tokens"])
def test_accumulation_averages_over_every_item_of_the_step(tmp_path: Path, items_per_row: bool) -> None:
    data, task = rows(7), Regression(items_per_row)
    whole = one_step(tmp_path, data, task, batch_size=7)  # one batch of 7
    split = one_step(tmp_path, data, task, batch_size=3, grad_accum=3)  # micro-batches of 3, 3, 1
    for a, b in zip(whole.parameters(), split.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_loss_terms_count_once_per_step(tmp_path: Path) -> None:
    class Regularised(nn.Linear):
        def __init__(self, term: bool) -> None:
            torch.manual_seed(0)
            super().__init__(3, 1)
            self.term = term

        def training_loss(self) -> torch.Tensor | None:  # as a DeltaModel offers (AdaLoRA's orthogonality term)
            return 0.5 * self.weight.pow(2).sum() if self.term else None

    def gradient(batch_size: int, accum: int, term: bool) -> torch.Tensor:
        model = Regularised(term)
        hooks = Hooks.for_model(model)
        grads: list[torch.Tensor] = []
        hooks.after_backward.append(lambda info: grads.append(info.model.weight.grad.clone()))
        cfg = sgd_train(max_steps=1, batch_size=batch_size, grad_accum=accum)
        fit(model, Regression(items_per_row=True), rows(7), [], cfg, EvalConfig(), quiet(), tmp_path / "r", hooks)
        return grads[0]

    with_term = gradient(7, 1, True)
    torch.testing.assert_close(gradient(3, 3, True), with_term, rtol=1e-6, atol=1e-7)
    # d/dw of 0.5 |w|^2 is w, added once to the mean-loss gradient whatever the micro-batches
    torch.testing.assert_close(with_term - gradient(7, 1, False), Regularised(True).weight.detach())


def test_lr_schedules() -> None:
    linear_, cosine, constant = (lr_factor(s, warmup=4, total=14) for s in ("linear", "cosine", "constant"))
    assert [round(linear_(s), 3) for s in range(4)] == [0.2, 0.4, 0.6, 0.8]
    assert linear_(4) == 1.0 and linear_(9) == pytest.approx(0.5) and linear_(14) == 0.0
    assert cosine(4) == 1.0 and cosine(9) == pytest.approx(0.5) and cosine(14) == pytest.approx(0.0)
    assert constant(4) == constant(13) == 1.0


def test_hooks_run_in_order_with_gradients_present(tmp_path: Path) -> None:
    seen: list[tuple[str, int, bool]] = []

    def record(point: str) -> Any:
        def hook(info: StepInfo) -> None:
            grads = all(p.grad is not None for p in info.model.parameters())
            seen.append((point, info.step, grads))

        return hook

    class Budgeted(nn.Linear):
        def __init__(self) -> None:
            super().__init__(3, 1)
            self.calls: list[int] = []

        def on_optimizer_step(self, global_step: int) -> None:
            self.calls.append(global_step)

    model = Budgeted()
    hooks = Hooks.for_model(model)
    hooks.after_backward.append(record("backward"))
    hooks.after_optimizer_step.append(record("optimizer"))
    hooks.after_eval.append(record("eval"))
    cfg = sgd_train(max_steps=3, batch_size=4)
    fit(model, Regression(), rows(12), rows(4, 1), cfg, EvalConfig(every=2, metric="loss"), quiet(), tmp_path, hooks)
    assert model.calls == [0, 1, 2]  # Trainer's numbering: steps done before this one
    assert seen == [("backward", 0, True), ("optimizer", 0, True), ("backward", 1, True), ("optimizer", 1, True),
                    ("eval", 2, False), ("backward", 2, True), ("optimizer", 2, True), ("eval", 3, False)]  # fmt: skip


def test_gradient_clipping(tmp_path: Path) -> None:
    norms: list[float] = []
    hooks = Hooks(after_optimizer_step=[lambda i: norms.append(float(i.model.weight.grad.norm()))])
    cfg = sgd_train(max_steps=2, batch_size=4, lr=1e-3, max_grad_norm=0.01)
    fit(linear(), Regression(), rows(8), [], cfg, EvalConfig(), quiet(), tmp_path, hooks)
    assert norms and all(n <= 0.01 + 1e-6 for n in norms)


def test_early_stopping_keeps_the_best_weights(tmp_path: Path) -> None:
    snapshots: dict[int, torch.Tensor] = {}
    hooks = Hooks(after_eval=[lambda i: snapshots.__setitem__(i.step, i.model.weight.detach().clone())])
    # a learning rate this large makes the loss blow up after the first steps
    cfg = sgd_train(epochs=50, batch_size=4, lr=3.0, optimizer="adamw")
    model = linear()
    result = fit(model, Regression(), rows(8), rows(8, 1), cfg, EvalConfig(every=1, metric="loss", patience=3),
                 quiet(), tmp_path, hooks)  # fmt: skip
    progress = result.progress
    assert progress.stopped_early and progress.step == progress.best_step + 3 < 100
    assert torch.equal(model.weight, snapshots[progress.best_step])
    assert result.metrics["loss"] == progress.best_metric


def test_records_and_plots(tmp_path: Path) -> None:
    cfg = sgd_train(max_steps=4, batch_size=2)
    fit(linear(), Regression(), rows(8), rows(4, 1), cfg, EvalConfig(every=2, metric="neg_mse"), quiet(), tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_neg_mse" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4] and [r["step"] for r in evals] == [2, 4]
    assert all(math.isfinite(r["loss"]) and r["lr"] > 0 and r["items_per_s"] > 0 for r in train)
    for name in ("loss.png", "eval.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bf16_and_gradient_checkpointing_on_a_transformers_model(tmp_path: Path) -> None:
    from tests.models import tiny_bert_cls

    import deltatune as dt

    class Classify(Regression):
        higher_is_better = frozenset()

        def collate(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
            return {"input_ids": torch.tensor([r["ids"] for r in rows]), "labels": torch.tensor([r["y"] for r in rows])}

        def count(self, batch: dict[str, torch.Tensor]) -> int:
            return len(batch["labels"])

        def loss_sum(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            logits = model(input_ids=batch["input_ids"]).logits.float()
            return nn.functional.cross_entropy(logits, batch["labels"], reduction="sum")

    data = [{"ids": [(i * 7 + j) % 60 + 1 for j in range(8)], "y": i % 3} for i in range(8)]
    torch.manual_seed(0)
    model = dt.wrap(tiny_bert_cls(), dt.LoraConfig(r=2, target_modules=["query", "value"], init_lora_weights=False))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    cfg = sgd_train(max_steps=2, batch_size=4, mixed_precision="bf16", gradient_checkpointing=True, lr=1e-2)
    fit(model, Classify(), data, [], cfg, EvalConfig(), quiet(), tmp_path)
    assert any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())
    after = dict(model.named_parameters())
    assert all(after[n].dtype == torch.float32 and not torch.equal(after[n], p) for n, p in before.items())
    with pytest.raises(RecipeError, match="gradient_checkpointing"):
        fit(linear(), Regression(), rows(4), [], dataclasses.replace(cfg, mixed_precision="no"), EvalConfig(),
            quiet(), tmp_path / "plain")  # fmt: skip


def test_checkpoints_are_pruned_and_unfinished_ones_ignored(tmp_path: Path) -> None:
    model = linear()
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, model, optimizer, scheduler, Progress(step=step), None, keep=2)
    (tmp_path / "checkpoints" / ".tmp-step-000008-123").mkdir()
    (tmp_path / "checkpoints" / "step-000010").mkdir()  # no progress.json: not complete
    assert [p.name for p in checkpoints(tmp_path)] == ["step-000004", "step-000006"]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
