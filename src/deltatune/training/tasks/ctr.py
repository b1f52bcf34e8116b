"""``ctr``: click prediction from a query/ad text pair and the user's behaviour features.

The model is a custom ``nn.Module``, not a transformers head: a text tower (a transformers encoder
reading "[CLS] query [SEP] ad [SEP]", mean-pooled), a small feature tower (an MLP on the behaviour
features) and one output layer on both, giving one click logit. An adapter targets layers inside
the text tower; the feature tower and the output layer are trained in full as ``modules_to_save``
(the task asks the runner to add them), so the saved adapter is an ordinary PEFT-layout folder that
loads onto a fresh :class:`ClickModel`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deltatune.training.errors import DataError
from deltatune.training.tasks import (
    Baseline,
    Batch,
    Rows,
    TaskKind,
    TaskSetup,
    load_pretrained,
    load_tokenizer,
    register_task,
)

FEATURE_TOWER = "feature_tower"
CLICK_HEAD = "click_head"


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve: the chance a random positive scores above a random negative, ties
    counting one half (Mann-Whitney U with average ranks). NaN when only one class is present."""
    scores, labels = scores.double().flatten(), labels.flatten().bool()
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=scores.dtype)
    # tied scores share the mean of the ranks they span
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    ranks[order] = mean_rank[inverse]
    u = float(ranks[labels].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def log_loss(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean binary cross-entropy of the click probabilities sigmoid(logits) (natural log)."""
    return float(F.binary_cross_entropy_with_logits(logits.double(), labels.double()))


def squash(x: torch.Tensor) -> torch.Tensor:
    """sign(x) * log(1 + |x|): counts, positions and shares on one scale without dataset statistics."""
    return torch.sign(x) * torch.log1p(x.abs())


class ClickModel(nn.Module):
    """logit = click_head([mean_pool(text_tower(query, ad)) ; feature_tower(squash(features))]).

    Shapes: token ids (B, T) -> text vector (B, H); features (B, F) -> (B, hidden); logit (B,).
    Without features (``num_features=0``) the head reads the text vector alone.
    """

    def __init__(self, text_tower: nn.Module, num_features: int, hidden: int = 32) -> None:
        super().__init__()
        self.text_tower = text_tower
        config: Any = text_tower.config  # a transformers encoder's config
        width = int(config.hidden_size)
        self.feature_tower = (
            nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
            if num_features
            else None
        )
        self.click_head = nn.Linear(width + (hidden if num_features else 0), 1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        states = self.text_tower(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        parts = [(states * mask).sum(1) / mask.sum(1).clamp(min=1.0)]
        if self.feature_tower is not None:
            if features is None:
                raise ValueError("This ClickModel was built with behaviour features; pass features=(batch, F).")
            parts.append(self.feature_tower(squash(features.to(states.dtype))))
        return self.click_head(torch.cat(parts, dim=-1)).squeeze(-1)


class ClickPrediction:
    """Binary click prediction: summed BCE loss; AUC-ROC and log-loss."""

    higher_is_better = frozenset({"auc"})
    metrics: tuple[str, ...] = ("auc", "log_loss")

    def __init__(
        self, tokenizer: Any, text_fields: Sequence[str], label_field: str, feature_fields: Sequence[str],
        max_length: int,
    ) -> None:  # fmt: skip
        self.tokenizer = tokenizer
        self.text_fields = list(text_fields)
        self.label_field = label_field
        self.feature_fields = list(feature_fields)
        self.max_length = max_length

    @property
    def required_fields(self) -> list[str]:
        return [*self.text_fields, *self.feature_fields, self.label_field]

    def inputs(self, rows: Sequence[dict[str, Any]]) -> Batch:
        texts = [[str(r[f]) for r in rows] for f in self.text_fields]
        batch = dict(
            self.tokenizer(*texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        )
        if self.feature_fields:
            batch["features"] = torch.tensor([[self._number(r, f) for f in self.feature_fields] for r in rows])
        return batch

    @staticmethod
    def _number(row: dict[str, Any], name: str) -> float:
        value = row[name]
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, bool) or not math.isfinite(number):
            raise DataError(f"Feature {name!r} must be a finite number, got {value!r} in row {row}.")
        return number

    def collate(self, rows: Sequence[dict[str, Any]]) -> Batch:
        batch = self.inputs(rows)
        batch["labels"] = torch.tensor([float(r[self.label_field]) for r in rows])
        return batch

    def count(self, batch: Batch) -> int:
        return int(batch["labels"].shape[0])

    def logits(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return model(**{k: v for k, v in batch.items() if k != "labels"}).float()

    def loss_sum(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self.logits(model, batch), batch["labels"], reduction="sum")

    def _all_logits(self, model: nn.Module, rows: Sequence[dict[str, Any]], batch_size: int) -> torch.Tensor:
        device = next(model.parameters()).device
        out = []
        for start in range(0, len(rows), batch_size):
            batch = self.inputs(rows[start : start + batch_size])
            out.append(self.logits(model, {k: v.to(device) for k, v in batch.items()}).cpu())
        return torch.cat(out) if out else torch.empty(0)

    def evaluate(self, model: nn.Module, rows: Sequence[dict[str, Any]], batch_size: int) -> dict[str, float]:
        logits = self._all_logits(model, rows, batch_size)
        labels = torch.tensor([float(r[self.label_field]) for r in rows])
        loss = log_loss(logits, labels)
        return {"loss": loss, "auc": roc_auc(logits, labels), "log_loss": loss}

    def predict(self, model: nn.Module, rows: Rows, batch_size: int) -> list[dict[str, Any]]:
        """Per row: ``click_probability``, the model's P(click)."""
        was_training = model.training
        model.eval()
        with torch.no_grad():
            probs = torch.sigmoid(self._all_logits(model, rows, batch_size))
        model.train(was_training)
        return [{"click_probability": round(float(p), 6)} for p in probs]


@dataclass
class CtrOptions:
    text_fields: list[str] = field(
        default_factory=lambda: ["query", "ad"], metadata={"help": "The two text fields read as one pair."}
    )
    label_field: str = field(default="clicked", metadata={"help": "Row field holding 1 (clicked) or 0."})
    feature_fields: list[str] = field(
        default_factory=lambda: ["position", "past_clicks", "affinity", "mobile"],
        metadata={"help": "Numeric behaviour features fed to the feature tower (squashed by sign(x)*log(1+|x|))."},
    )
    use_features: bool = field(
        default=True, metadata={"help": "Use the behaviour features (false: the click head reads the text alone)."}
    )
    feature_hidden: int = field(default=32, metadata={"help": "Width of the feature tower's two layers."})

    def __post_init__(self) -> None:
        if len(self.text_fields) != 2:
            raise ValueError(f"text_fields must name two fields (query, ad), got {self.text_fields}")
        if self.use_features and not self.feature_fields:
            raise ValueError("use_features is true but feature_fields is empty; list the features or set it false")
        if self.feature_hidden < 1:
            raise ValueError(f"feature_hidden must be >= 1, got {self.feature_hidden}")


def setup(recipe: Any, options: CtrOptions, model_path: str) -> TaskSetup:
    from transformers import AutoModel

    tokenizer = load_tokenizer(model_path, recipe.model.path)
    features = options.feature_fields if options.use_features else []
    task = ClickPrediction(tokenizer, options.text_fields, options.label_field, features, recipe.model.max_length)
    trained = [FEATURE_TOWER, CLICK_HEAD] if features else [CLICK_HEAD]

    def load_model() -> nn.Module:
        text_tower = load_pretrained(AutoModel, model_path, add_pooling_layer=False)
        return ClickModel(text_tower, len(features), options.feature_hidden)

    def train_towers(model: nn.Module) -> None:
        for name in trained:
            getattr(model, name).requires_grad_(True)

    name = "frozen text tower + trained " + ("feature tower and head" if features else "head")
    return TaskSetup(
        task=task,
        required_fields=task.required_fields,
        label_field=options.label_field,
        load_model=load_model,
        baseline=Baseline(name, train_only=train_towers),
        predict=task.predict,
        modules_to_save=trained,
    )


register_task(
    TaskKind(
        name="ctr",
        summary="query/ad text + behaviour features -> click probability, custom two-tower model (AUC, log-loss)",
        options_cls=CtrOptions,
        setup=setup,
    )
)
