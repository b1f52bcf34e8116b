"""``summarization``: extractive summaries, the top-k sentences of a document kept in document order.

A document is split into sentences; a sequence-classification model scores each sentence (paired
with the document's title when the rows have one) as in the summary (class 1) or not, trained on
labels read off the reference: a sentence is positive when the reference summary holds it. The
``k`` best sentences, in document order, form the summary, scored by ROUGE-1, ROUGE-2 and ROUGE-L
F1 against the reference. The baseline needs no model: the first ``k`` sentences (lead-k).
"""

from __future__ import annotations

import re
from collections import Counter
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
)

# A sentence ends at . ! or ? followed by space and a capital, a digit or a quote ("$4.2" is not an end).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9'\"])")
_TOKEN = re.compile(r"[a-z0-9]+")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def rouge_tokens(text: str) -> list[str]:
    """Lower-cased alphanumeric words, as ROUGE compares them (no stemming, no stop-word removal)."""
    return _TOKEN.findall(text.lower())


def _f1(overlap: int, n_candidate: int, n_reference: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / n_candidate, overlap / n_reference
    return 2 * precision * recall / (precision + recall)


def rouge_n(candidate: str, reference: str, n: int) -> float:
    """ROUGE-N F1: n-grams shared by candidate and reference (clipped counts) over each side's n-grams."""

    def grams(tokens: list[str]) -> Counter[tuple[str, ...]]:
        return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))

    cand, ref = grams(rouge_tokens(candidate)), grams(rouge_tokens(reference))
    return _f1(sum((cand & ref).values()), sum(cand.values()), sum(ref.values()))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, one row at a time)."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1: the longest common subsequence of the two token sequences over each side's length."""
    cand, ref = rouge_tokens(candidate), rouge_tokens(reference)
    return _f1(lcs_length(cand, ref), len(cand), len(ref))


def rouge_scores(candidates: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 over the documents."""
    pairs = list(zip(candidates, references, strict=True))
    n = max(1, len(pairs))
    return {
        "rouge_1": sum(rouge_n(c, r, 1) for c, r in pairs) / n,
        "rouge_2": sum(rouge_n(c, r, 2) for c, r in pairs) / n,
        "rouge_l": sum(rouge_l(c, r) for c, r in pairs) / n,
    }


def top_k_in_order(scores: Sequence[float], k: int) -> list[int]:
    """Indexes of the k highest scores (ties: the earlier sentence), in document order."""
    best = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]
    return sorted(best)


class ExtractiveSummarization:
    """Score each sentence of a document (in the summary or not); keep the top k in document order."""

    higher_is_better = frozenset({"rouge_1", "rouge_2", "rouge_l"})
    metrics: tuple[str, ...] = ("rouge_1", "rouge_2", "rouge_l")

    def __init__(self, tokenizer: Any, options: SummarizationOptions, max_length: int):
        self.tokenizer = tokenizer
        self.options = options
        self.max_length = max_length

    def sentences(self, row: dict[str, Any]) -> list[str]:
        return split_sentences(str(row[self.options.document_field]))

    def labels(self, row: dict[str, Any], sentences: list[str]) -> list[int]:
        reference = set(split_sentences(str(row[self.options.summary_field])))
        return [int(s in reference) for s in sentences]

    def encode(self, rows: Sequence[dict[str, Any]]) -> tuple[Any, list[list[str]]]:
        """All sentences of the rows as one batch of (title, sentence) pairs, and the sentences per row."""
        per_row = [self.sentences(r) for r in rows]
        texts = [s for sents in per_row for s in sents]
        title = self.options.title_field
        if title:
            titles = [str(r.get(title) or "") for r, sents in zip(rows, per_row, strict=True) for _ in sents]
            encoded = self.tokenizer(titles, texts, truncation="only_second", max_length=self.max_length,
                                     padding=True, return_tensors="pt")  # fmt: skip
        else:
            encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True,
                                     return_tensors="pt")  # fmt: skip
        return encoded, per_row

    def collate(self, rows: Sequence[dict[str, Any]]) -> Batch:
        encoded, per_row = self.encode(rows)
        labels = [y for r, sents in zip(rows, per_row, strict=True) for y in self.labels(r, sents)]
        return {**dict(encoded), "labels": torch.tensor(labels)}

    def count(self, batch: Batch) -> int:
        return int(batch["labels"].shape[0])  # sentences

    @staticmethod
    def logits(model: nn.Module, batch: Batch) -> torch.Tensor:
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()

    def loss_sum(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch), batch["labels"], reduction="sum")

    def summaries(self, model: nn.Module, rows: Rows, batch_size: int) -> list[list[str]]:
        """The chosen sentences of each row (``batch_size`` documents per forward)."""
        device = next(model.parameters()).device
        out: list[list[str]] = []
        for start in range(0, len(rows), batch_size):
            encoded, per_row = self.encode(rows[start : start + batch_size])
            logits = self.logits(model, {k: v.to(device) for k, v in encoded.items()})
            probs = logits.softmax(-1)[:, 1].cpu().tolist()
            for sents in per_row:
                chosen, probs = probs[: len(sents)], probs[len(sents) :]
                out.append([sents[i] for i in top_k_in_order(chosen, self.options.k)])
        return out

    def evaluate(self, model: nn.Module, rows: Sequence[dict[str, Any]], batch_size: int) -> dict[str, float]:
        device = next(model.parameters()).device
        loss, count = 0.0, 0
        for start in range(0, len(rows), batch_size):
            batch = {k: v.to(device) for k, v in self.collate(rows[start : start + batch_size]).items()}
            loss += float(self.loss_sum(model, batch))
            count += self.count(batch)
        chosen = self.summaries(model, list(rows), batch_size)
        references = [str(r[self.options.summary_field]) for r in rows]
        return {"loss": loss / max(1, count), **rouge_scores([" ".join(c) for c in chosen], references)}

    def lead_k(self, rows: Rows) -> dict[str, float]:
        """The baseline: the first k sentences of each document."""
        leads = [" ".join(self.sentences(r)[: self.options.k]) for r in rows]
        return rouge_scores(leads, [str(r[self.options.summary_field]) for r in rows])

    def predict(self, model: nn.Module, rows: Rows, batch_size: int) -> list[dict[str, Any]]:
        """Per row: the selected sentences (in document order) and the summary they make."""
        return [{"summary": " ".join(c), "sentences": c} for c in self.summaries(model, rows, batch_size)]


@dataclass
class SummarizationOptions:
    document_field: str = field(default="document", metadata={"help": "Row field holding the document."})
    summary_field: str = field(default="summary", metadata={"help": "Row field holding the reference summary."})
    title_field: str = field(
        default="title", metadata={"help": "Row field paired with each sentence as context; empty = none."}
    )
    k: int = field(default=3, metadata={"help": "Sentences per summary (the model's top k, and the lead-k baseline)."})

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.document_field == self.summary_field:
            raise ValueError(f"document_field and summary_field must differ, both are {self.document_field!r}")


def setup(recipe: Any, options: SummarizationOptions, model_path: str) -> TaskSetup:
    from transformers import AutoModelForSequenceClassification

    if recipe.model.num_labels != 2:
        raise RecipeError("model.num_labels must be 2 for summarization (a sentence is in the summary or not).")
    tokenizer = load_tokenizer(model_path, recipe.model.path)
    task = ExtractiveSummarization(tokenizer, options, recipe.model.max_length)
    return TaskSetup(
        task=task,
        required_fields=[options.document_field, options.summary_field],
        input_fields=[options.document_field],  # the title is optional context
        load_model=lambda: load_pretrained(AutoModelForSequenceClassification, model_path, num_labels=2),
        adapter_task_type="SEQ_CLS",
        baseline=Baseline(f"lead-{options.k}", score=task.lead_k),
        predict=task.predict,
    )


register_task(
    TaskKind(
        name="summarization",
        summary="extractive summarization: score each sentence, keep the top k in document order (ROUGE-1/2/L F1)",
        options_cls=SummarizationOptions,
        setup=setup,
    )
)
