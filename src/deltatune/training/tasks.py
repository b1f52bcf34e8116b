"""What a run learns: how rows become batches, the loss, and the task's metrics.

The training loop only sees the :class:`Task` protocol, so a new task (extractive QA, CTR, ...)
is a new class here, not a branch in the loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

Batch = dict[str, torch.Tensor]


class Task(Protocol):
    """The loop's view of a task."""

    # Metrics where a larger value is better; anything else (e.g. "loss") is minimised.
    higher_is_better: frozenset[str]

    def collate(self, rows: Sequence[dict[str, Any]]) -> Batch:
        """Rows -> one batch of tensors (on the CPU)."""
        ...

    def count(self, batch: Batch) -> int:
        """How many items the batch's summed loss covers (examples, or target tokens)."""
        ...

    def loss_sum(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The loss summed (not averaged) over the batch's items, so micro-batches add up exactly.

        Compute it from the outputs (logits), not from a ``.loss`` the model returns: a DeltaModel adds
        its adapters' regularisers to that, and the loop adds them itself (``Hooks.loss_terms``).
        """
        ...

    def evaluate(self, model: nn.Module, rows: Sequence[dict[str, Any]], batch_size: int) -> dict[str, float]:
        """Metrics on ``rows``; the model is already in eval mode under no_grad."""
        ...


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


class PairClassification:
    """Classify one text or a text pair ("[CLS] a [SEP] b [SEP]") with a sequence-classification model."""

    higher_is_better = frozenset({"accuracy", "f1"})

    def __init__(self, tokenizer: Any, text_fields: Sequence[str], label_field: str, num_labels: int, max_length: int):
        self.tokenizer = tokenizer
        self.text_fields = list(text_fields)
        self.label_field = label_field
        self.num_labels = num_labels
        self.max_length = max_length

    @property
    def required_fields(self) -> list[str]:
        return [*self.text_fields, self.label_field]

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
        return {"loss": loss, **classification_scores(all_logits.argmax(-1), all_labels, self.num_labels)}
