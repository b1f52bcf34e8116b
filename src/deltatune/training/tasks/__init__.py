"""What a run learns: one :class:`TaskKind` per recipe ``task:``, registered by its own module here.

The training loop only sees the :class:`Task` protocol (rows -> batches, summed loss, metrics); the
runner only sees :class:`TaskKind` (which rows a task needs, which model it trains, its baseline). A
new task is a new module in this package that calls :func:`register_task`, not a branch elsewhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from deltatune.training.errors import ModelPathError, RecipeError

Batch = dict[str, torch.Tensor]
Rows = list[dict[str, Any]]

# Modules of the built-in tasks; importing one registers its TaskKind.
BUILTIN_TASK_MODULES = ("classification", "mrc", "ctr", "sft", "summarization")


class Task(Protocol):
    """The loop's view of a task."""

    # Metrics where a larger value is better; anything else (e.g. "loss") is minimised.
    higher_is_better: frozenset[str]
    # The metrics ``evaluate`` reports besides "loss", in the order reports show them.
    metrics: tuple[str, ...]

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
        """Metrics on ``rows``; the model is already in eval mode under no_grad.

        A task may also set ``self.last_samples`` (a list of JSON-able dicts, e.g. generated text):
        the loop writes it into that evaluation's ``metrics.jsonl`` record as ``samples``.
        """
        ...


@dataclass
class Baseline:
    """What a recipe reports next to the adapted model.

    ``train_only`` set: the runner loads a fresh model, freezes everything, lets ``train_only`` unfreeze
    what the baseline trains (e.g. the head) and trains it like the adapter. ``score`` set: a heuristic
    that needs no model (e.g. lead-k sentences) scores the evaluation rows. Neither: the untouched
    base model is evaluated.
    """

    name: str
    train_only: Callable[[nn.Module], None] | None = None
    score: Callable[[Rows], dict[str, float]] | None = None


@dataclass
class TaskSetup:
    """A task made concrete for one recipe: everything the runner needs."""

    task: Task
    required_fields: list[str]  # every data row must hold these
    load_model: Callable[[], nn.Module]  # a fresh base model (the runner seeds torch first)
    adapter_task_type: str | None = None  # the adapter config's task_type (SEQ_CLS saves the head too)
    label_field: str | None = None  # a field that must hold an integer class label
    baseline: Baseline | None = None
    # Optional: (model, rows, batch size) -> what ``deltatune predict`` writes per row (scores, labels, answers).
    predict: Callable[[nn.Module, Rows, int], list[dict[str, Any]]] | None = None
    # Modules of a custom model trained in full (its heads): added to the adapter's modules_to_save.
    modules_to_save: list[str] | None = None
    # The fields ``predict`` needs (rows to score have no labels or answers); None = required_fields
    # without label_field.
    input_fields: list[str] | None = None

    def prediction_fields(self) -> list[str]:
        if self.input_fields is not None:
            return list(self.input_fields)
        return [f for f in self.required_fields if f != self.label_field]


@dataclass(frozen=True)
class TaskKind:
    """A recipe ``task:`` value: its options (the recipe's ``task_options:``) and how to set it up."""

    name: str
    summary: str
    options_cls: type  # a dataclass; its fields (with metadata["help"]) are the recipe's task_options keys
    # (recipe, options object, model folder or Hub id) -> TaskSetup. Loads its own tokenizer.
    setup: Callable[[Any, Any, str], TaskSetup]


_TASKS: dict[str, TaskKind] = {}


def register_task(kind: TaskKind) -> TaskKind:
    if kind.name in _TASKS:
        raise ValueError(f"task {kind.name!r} is already registered")
    _TASKS[kind.name] = kind
    return kind


def task_kinds() -> dict[str, TaskKind]:
    for module in BUILTIN_TASK_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return dict(_TASKS)


def get_task_kind(name: str) -> TaskKind:
    kinds = task_kinds()
    if name not in kinds:
        near = difflib.get_close_matches(name, list(kinds), n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise RecipeError(f"Unknown task {name!r}.{hint} Tasks: {', '.join(sorted(kinds))}.")
    return kinds[name]


def task_options(kind: TaskKind, options: dict[str, Any], source: str = "recipe") -> Any:
    """The task's options object from the recipe's ``task_options`` mapping (keys and types checked)."""
    import typing

    from deltatune.training.recipe import check_value

    hints = typing.get_type_hints(kind.options_cls)
    names = [f.name for f in dataclasses.fields(kind.options_cls)]
    values = {}
    for key, value in options.items():
        if key not in names:
            near = difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean 'task_options.{near[0]}'?" if near else ""
            raise RecipeError(
                f"{source}: unknown recipe key 'task_options.{key}' for task {kind.name!r}.{hint} "
                f"Its options: {', '.join(names) or 'none'}."
            )
        values[key] = check_value(value, hints[key], f"task_options.{key}", source)
    try:
        return kind.options_cls(**values)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{source}: task_options for task {kind.name!r}: {exc}") from exc


def load_tokenizer(model_path: str, source: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_path)
    except OSError as exc:
        raise ModelPathError(f"Could not load a tokenizer from model.path {source!r}: {exc}") from exc


def load_pretrained(auto_cls: Any, path: str, **kwargs: Any) -> nn.Module:
    """``auto_cls.from_pretrained(path, **kwargs)`` without the expected "newly initialized head" noise."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return auto_cls.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise ModelPathError(f"Could not load the model at {path!r}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def train_head_only(task_type: str) -> Callable[[nn.Module], None]:
    """A baseline's ``train_only``: unfreeze the model's task head (the last module named as one)."""
    from deltatune.integrations.transformers import TASK_HEADS

    def unfreeze(model: nn.Module) -> None:
        heads = [m for n, m in model.named_modules() if n.split(".")[-1] in TASK_HEADS[task_type]]
        if not heads:
            raise RecipeError(f"The model has no {task_type} head ({TASK_HEADS[task_type]}) for the baseline.")
        heads[-1].requires_grad_(True)

    return unfreeze


from deltatune.training.tasks.classification import PairClassification, classification_scores  # noqa: E402

__all__ = [
    "Baseline",
    "Batch",
    "PairClassification",
    "Task",
    "TaskKind",
    "TaskSetup",
    "classification_scores",
    "get_task_kind",
    "load_pretrained",
    "load_tokenizer",
    "register_task",
    "task_kinds",
    "task_options",
    "train_head_only",
]
