"""``pair_classification``: one text or a text pair -> a class (relevance, compatibility, ...)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deltatune.training.errors import RecipeError
from deltatune.training.tasks import (
    Baseline,
    Batch,
    Rows,
    TaskKind,
    TaskSetup,
    load_pretrained,
    load_tokenizer,
    register_task,
    train_head_only,
)


def classification_scores(pred: torch.Tensor, labels: torch.Tensor, num_labels: int) -> dict[str, float]:
    """Accuracy and F1: of class 1 for two classes, macro-averaged over classes otherwise."""
    classes = [1] if num_labels == 2 else list(range(num_labels))
    f1s = []
    for c in classes:
        tp = int(((pred == c) & (labels == c)).sum())
        fp = int(((pred == c) & (labels != c)).sum())
        fn = int(((pred != c) & (labels == c)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return {"accuracy": float((pred == labels).float().mean()), "f1": sum(f1s) / len(f1s)}


def group_accuracy(pred: torch.Tensor, labels: torch.Tensor, groups: Sequence[str]) -> dict[str, float]:
    """``accuracy_<group>`` for every value of a row's group field (e.g. hard vs easy negatives)."""
    correct = (pred == labels).tolist()
    out: dict[str, list[bool]] = {}
    for group, ok in zip(groups, correct, strict=True):
        out.setdefault(group, []).append(ok)
    return {f"accuracy_{g}": sum(oks) / len(oks) for g, oks in sorted(out.items())}


class PairClassification:
    """Classify one text or a text pair ("[CLS] a [SEP] b [SEP]") with a sequence-classification model."""

    higher_is_better = frozenset({"accuracy", "f1"})
    metrics: tuple[str, ...] = ("accuracy", "f1")

    def __init__(
        self,
        tokenizer: Any,
        text_fields: Sequence[str],
        label_field: str,
        num_labels: int,
        max_length: int,
        group_field: str | None = None,
    ):
        self.tokenizer = tokenizer
        self.group_field = group_field
        self.text_fields = list(text_fields)
        self.label_field = label_field
        self.num_labels = num_labels
        self.max_length = max_length

    @property
    def required_fields(self) -> list[str]:
        return [*self.text_fields, self.label_field, *([self.group_field] if self.group_field else [])]

    def collate(self, rows: Sequence[dict[str, Any]]) -> Batch:
        texts = [[str(r[f]) for r in rows] for f in self.text_fields]
        encoded = self.tokenizer(*texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        batch = dict(encoded)
        batch["labels"] = torch.tensor([int(r[self.label_field]) for r in rows])
        return batch

    def count(self, batch: Batch) -> int:
        return int(batch["labels"].shape[0])

    def logits(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return model(**inputs).logits.float()

    def loss_sum(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch), batch["labels"], reduction="sum")

    def evaluate(self, model: nn.Module, rows: Sequence[dict[str, Any]], batch_size: int) -> dict[str, float]:
        device = next(model.parameters()).device
        logits, labels = [], []
        for start in range(0, len(rows), batch_size):
            batch = {k: v.to(device) for k, v in self.collate(rows[start : start + batch_size]).items()}
            logits.append(self.logits(model, batch).cpu())
            labels.append(batch["labels"].cpu())
        all_logits, all_labels = torch.cat(logits), torch.cat(labels)
        loss = float(F.cross_entropy(all_logits, all_labels))
        pred = all_logits.argmax(-1)
        scores = {"loss": loss, **classification_scores(pred, all_labels, self.num_labels)}
        if self.group_field:
            scores.update(group_accuracy(pred, all_labels, [str(r[self.group_field]) for r in rows]))
        return scores

    def predict(self, model: nn.Module, rows: Rows, batch_size: int) -> list[dict[str, Any]]:
        """Per row: the predicted label and the probability of each class (``score`` = P(class 1))."""
        device = next(model.parameters()).device
        out: list[dict[str, Any]] = []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            texts = [[str(r[f]) for r in chunk] for f in self.text_fields]
            encoded = self.tokenizer(*texts, truncation=True, max_length=self.max_length, padding=True,
                                     return_tensors="pt")  # fmt: skip
            probs = model(**{k: v.to(device) for k, v in encoded.items()}).logits.float().softmax(-1).cpu()
            for p in probs:
                row = {"label": int(p.argmax()), "probs": [round(float(v), 6) for v in p]}
                if self.num_labels == 2:
                    row["score"] = round(float(p[1]), 6)
                out.append(row)
        return out


@dataclass
class PairOptions:
    text_fields: list[str] = field(
        default_factory=lambda: ["query", "title"],
        metadata={"help": "Row fields fed to the tokenizer: one text, or a pair."},
    )
    label_field: str = field(default="label", metadata={"help": "Row field holding the integer class label."})
    group_field: str | None = field(
        default=None,
        metadata={"help": "Optional row field grouping the rows (e.g. kind): adds accuracy_<group> metrics."},
    )

    def __post_init__(self) -> None:
        if not 1 <= len(self.text_fields) <= 2:
            raise ValueError(f"text_fields must name one field or a pair, got {self.text_fields}")


def setup(recipe: Any, options: PairOptions, model_path: str) -> TaskSetup:
    from transformers import AutoModelForSequenceClassification

    tokenizer = load_tokenizer(model_path, recipe.model.path)
    num_labels = recipe.model.num_labels
    if num_labels < 2:
        raise RecipeError("model.num_labels must be >= 2 for pair_classification.")
    task = PairClassification(
        tokenizer, options.text_fields, options.label_field, num_labels, recipe.model.max_length, options.group_field
    )
    return TaskSetup(
        task=task,
        required_fields=task.required_fields,
        label_field=options.label_field,
        load_model=lambda: load_pretrained(AutoModelForSequenceClassification, model_path, num_labels=num_labels),
        adapter_task_type="SEQ_CLS",
        baseline=Baseline("frozen encoder + trained head", train_only=train_head_only("SEQ_CLS")),
        predict=task.predict,
        input_fields=list(options.text_fields),  # scoring needs neither the label nor the group field
    )


register_task(
    TaskKind(
        name="pair_classification",
        summary="one text or a pair -> a class, with a sequence-classification model (accuracy, F1)",
        options_cls=PairOptions,
        setup=setup,
    )
)
