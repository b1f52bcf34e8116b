"""``mrc``: extractive question answering, the answer is a span of the passage (SQuAD-style).

A question-answering model (a start and an end logit per token, the ``qa_outputs`` head) reads
"[CLS] question [SEP] passage [SEP]"; the character span of the answer is mapped to its first and
last token through the tokenizer's offsets. Predicted answers are the best-scoring valid span
(start <= end, inside the passage, at most ``max_answer_tokens`` long), scored against the gold
answer by exact match and token F1 after SQuAD's normalisation.
"""

from __future__ import annotations

import re
import string
from collections import Counter
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
    train_head_only,
)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """F1 of the normalised tokens shared by prediction and gold (counted with multiplicity)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def span_scores(predictions: Sequence[str], golds: Sequence[str]) -> dict[str, float]:
    """Mean exact match and token F1 over the examples."""
    n = max(1, len(golds))
    return {
        "exact_match": sum(exact_match(p, g) for p, g in zip(predictions, golds, strict=True)) / n,
        "f1": sum(token_f1(p, g) for p, g in zip(predictions, golds, strict=True)) / n,
    }


def best_spans(start: torch.Tensor, end: torch.Tensor, allowed: torch.Tensor, max_tokens: int) -> torch.Tensor:
    """(batch, 2) token indexes of the highest start + end logit with start <= end < start + max_tokens,
    both where ``allowed`` (the passage's tokens)."""
    n = start.shape[1]
    idx = torch.arange(n, device=start.device)
    gap = idx[None, :] - idx[:, None]  # [i, j] = j - i
    valid = (gap >= 0) & (gap < max_tokens)
    scores = start[:, :, None] + end[:, None, :]
    ok = valid[None] & allowed[:, :, None] & allowed[:, None, :]
    flat = scores.masked_fill(~ok, float("-inf")).flatten(1).argmax(-1)
    return torch.stack([flat // n, flat % n], dim=1)


class ExtractiveQA:
    """Question + passage -> answer span, with a question-answering model (start/end logits)."""

    higher_is_better = frozenset({"exact_match", "f1"})
    metrics: tuple[str, ...] = ("exact_match", "f1")

    def __init__(self, tokenizer: Any, options: MrcOptions, max_length: int):
        self.tokenizer = tokenizer
        self.options = options
        self.max_length = max_length

    def encode(self, rows: Sequence[dict[str, Any]]) -> Any:
        o = self.options
        return self.tokenizer(
            [str(r[o.question_field]) for r in rows], [str(r[o.context_field]) for r in rows],
            truncation="only_second", max_length=self.max_length, padding=True, return_offsets_mapping=True,
            return_tensors="pt",
        )  # fmt: skip

    def answer_span(self, row: dict[str, Any]) -> tuple[int, int]:
        """Character start and end of the row's answer in its passage."""
        o = self.options
        context, answer = str(row[o.context_field]), str(row[o.answer_field])
        start = row.get(o.answer_start_field)
        if start is None or context[int(start) : int(start) + len(answer)] != answer:
            if start is not None:
                raise DataError(
                    f"{o.answer_start_field}={start} does not point at the answer {answer!r} in the "
                    f"{o.context_field}; fix the offset or leave it out to use the first occurrence."
                )
            start = context.find(answer)
            if start < 0:
                raise DataError(f"The answer {answer!r} is not in the {o.context_field} {context[:80]!r}...")
        return int(start), int(start) + len(answer)

    def positions(self, encoded: Any, offsets: torch.Tensor, rows: Sequence[dict[str, Any]]) -> Batch:
        """Token positions of each row's answer: its first and last passage token."""
        starts, ends = [], []
        for i, row in enumerate(rows):
            char_start, char_end = self.answer_span(row)
            in_context = torch.tensor([s == 1 for s in encoded.sequence_ids(i)])
            off = offsets[i]
            first = ((off[:, 0] <= char_start) & (off[:, 1] > char_start) & in_context).nonzero()
            last = ((off[:, 0] < char_end) & (off[:, 1] >= char_end) & in_context).nonzero()
            # An answer cut off by truncation points at [CLS] (position 0), as in SQuAD 2.0.
            ok = len(first) and len(last)
            starts.append(int(first[0]) if ok else 0)
            ends.append(int(last[-1]) if ok else 0)
        return {"start_positions": torch.tensor(starts), "end_positions": torch.tensor(ends)}

    def collate(self, rows: Sequence[dict[str, Any]]) -> Batch:
        encoded = self.encode(rows)
        offsets = encoded.pop("offset_mapping")
        return {**dict(encoded), **self.positions(encoded, offsets, rows)}

    def count(self, batch: Batch) -> int:
        return int(batch["start_positions"].shape[0])

    def logits(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = {k: v for k, v in batch.items() if k not in ("start_positions", "end_positions")}
        out = model(**inputs)
        return out.start_logits.float(), out.end_logits.float()

    @staticmethod
    def span_loss(start: torch.Tensor, end: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Summed over examples: the mean of the start and the end cross-entropy."""
        loss = F.cross_entropy(start, batch["start_positions"], reduction="sum")
        return (loss + F.cross_entropy(end, batch["end_positions"], reduction="sum")) / 2

    def loss_sum(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return self.span_loss(*self.logits(model, batch), batch)

    def answers(self, model: nn.Module, rows: Rows, batch_size: int) -> tuple[list[str], list[float], float]:
        """Predicted answer texts, their span scores, and the mean loss (0 if rows hold no answers)."""
        device = next(model.parameters()).device
        texts: list[str] = []
        scores: list[float] = []
        loss, has_answers = 0.0, all(r.get(self.options.answer_field) not in (None, "") for r in rows)
        for begin in range(0, len(rows), batch_size):
            chunk = rows[begin : begin + batch_size]
            encoded = self.encode(chunk)
            offsets = encoded.pop("offset_mapping")
            batch = {k: v.to(device) for k, v in encoded.items()}
            if has_answers:
                batch.update({k: v.to(device) for k, v in self.positions(encoded, offsets, chunk).items()})
            start, end = self.logits(model, batch)
            if has_answers:
                loss += float(self.span_loss(start, end, batch))
            allowed = torch.tensor([[s == 1 for s in encoded.sequence_ids(i)] for i in range(len(chunk))])
            spans = best_spans(start.cpu(), end.cpu(), allowed, self.options.max_answer_tokens)
            for i, (a, b) in enumerate(spans.tolist()):
                context = str(chunk[i][self.options.context_field])
                texts.append(context[int(offsets[i, a, 0]) : int(offsets[i, b, 1])])
                scores.append(float(start[i, a] + end[i, b]))
        return texts, scores, loss / max(1, len(rows))

    def evaluate(self, model: nn.Module, rows: Sequence[dict[str, Any]], batch_size: int) -> dict[str, float]:
        texts, _, loss = self.answers(model, list(rows), batch_size)
        golds = [str(r[self.options.answer_field]) for r in rows]
        return {"loss": loss, **span_scores(texts, golds)}

    def predict(self, model: nn.Module, rows: Rows, batch_size: int) -> list[dict[str, Any]]:
        """Per row: the answer text and its span score (start + end logit)."""
        plain = [{k: v for k, v in r.items() if k != self.options.answer_field} for r in rows]
        texts, scores, _ = self.answers(model, plain, batch_size)
        return [{"answer": t, "score": round(s, 4)} for t, s in zip(texts, scores, strict=True)]


@dataclass
class MrcOptions:
    question_field: str = field(default="question", metadata={"help": "Row field holding the question."})
    context_field: str = field(default="context", metadata={"help": "Row field holding the passage."})
    answer_field: str = field(default="answer", metadata={"help": "Row field holding the answer (a passage span)."})
    answer_start_field: str = field(
        default="answer_start",
        metadata={"help": "Row field with the answer's character offset; rows without it use the first occurrence."},
    )
    max_answer_tokens: int = field(default=30, metadata={"help": "Longest answer span predicted, in tokens."})

    def __post_init__(self) -> None:
        if self.max_answer_tokens < 1:
            raise ValueError(f"max_answer_tokens must be >= 1, got {self.max_answer_tokens}")
        names = [self.question_field, self.context_field, self.answer_field]
        if len(set(names)) != 3:
            raise ValueError(f"question_field, context_field and answer_field must differ, got {names}")


def setup(recipe: Any, options: MrcOptions, model_path: str) -> TaskSetup:
    from transformers import AutoModelForQuestionAnswering

    tokenizer = load_tokenizer(model_path, recipe.model.path)
    task = ExtractiveQA(tokenizer, options, recipe.model.max_length)
    return TaskSetup(
        task=task,
        required_fields=[options.question_field, options.context_field, options.answer_field],
        input_fields=[options.question_field, options.context_field],
        load_model=lambda: load_pretrained(AutoModelForQuestionAnswering, model_path),
        adapter_task_type="QUESTION_ANS",
        baseline=Baseline("frozen encoder + trained qa_outputs head", train_only=train_head_only("QUESTION_ANS")),
        predict=task.predict,
    )


register_task(
    TaskKind(
        name="mrc",
        summary="extractive question answering: question + passage -> answer span (exact match, token F1)",
        options_cls=MrcOptions,
        setup=setup,
    )
)
