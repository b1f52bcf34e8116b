"""What ``eval``, ``predict`` and ``merge`` open: a finished run folder, or a recipe plus an adapter.

A run folder (``deltatune train`` output) holds ``run.json`` with the recipe it was trained with and
the adapter in ``adapter/``, so ``deltatune eval runs/relevance`` needs nothing else. A recipe name or
file works too, with ``--adapter`` (default: the recipe's ``output.dir``/adapter).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from deltatune.errors import CheckpointError
from deltatune.training.config import Recipe
from deltatune.training.tasks import TaskSetup

RUN_FILE = "run.json"


@dataclass
class Opened:
    recipe: Recipe
    setup: TaskSetup
    model: nn.Module  # the DeltaModel with the adapter loaded, in eval mode
    adapter_dir: Path


def add_target_arguments(p: Any) -> None:
    p.add_argument("target", help="a run folder written by `deltatune train`, or a recipe name/file")
    p.add_argument(
        "--adapter", help="adapter folder (default: <run folder>/adapter, or the recipe's output.dir/adapter)"
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change a recipe setting, e.g. --set model.max_length=64 (repeatable)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=0, help="rows per batch (default: the recipe's eval.batch_size)")


def load_target_recipe(target: str, overrides: Sequence[str]) -> tuple[Recipe, Path | None]:
    """The recipe and, for a run folder, its default adapter folder."""
    from deltatune.training.recipe import apply_override, load_recipe, recipe_from_dict

    folder = Path(target)
    run_file = folder / RUN_FILE
    if folder.is_dir() and run_file.is_file():
        try:
            data = json.loads(run_file.read_text(encoding="utf-8"))["recipe"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{run_file} is not a readable run record ({exc}).") from exc
        for item in overrides:
            apply_override(data, item)
        return recipe_from_dict(data, source=str(run_file)), folder / "adapter"
    if folder.is_dir():
        raise CheckpointError(
            f"{folder} is a folder without {RUN_FILE}; pass a run folder written by `deltatune train`, "
            "or a recipe with --adapter."
        )
    recipe = load_recipe(target, overrides)
    return recipe, None


def open_target(target: str, adapter: str | None, overrides: Sequence[str]) -> Opened:
    """Load the recipe's base model with the adapter on it, ready for inference."""
    import torch

    import deltatune as dt
    from deltatune.training.runner import resolve_model_path
    from deltatune.training.tasks import get_task_kind, task_options

    recipe, run_adapter = load_target_recipe(target, overrides)
    adapter_dir = Path(adapter) if adapter else run_adapter or Path(recipe.output.dir) / "adapter"
    if not (adapter_dir / "adapter_config.json").is_file():
        raise CheckpointError(
            f"No adapter in {adapter_dir} (no adapter_config.json); train one first with "
            f"`deltatune train {target}` or pass --adapter FOLDER."
        )
    kind = get_task_kind(recipe.task)
    setup = kind.setup(recipe, task_options(kind, recipe.task_options), resolve_model_path(recipe.model.path))
    torch.manual_seed(recipe.train.seed)
    model = dt.DeltaModel.from_pretrained(setup.load_model(), str(adapter_dir))
    model.eval()
    return Opened(recipe, setup, model, adapter_dir)
