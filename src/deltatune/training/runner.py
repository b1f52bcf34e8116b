"""Run a recipe end to end: check everything, train a baseline and the adapter, report both.

Nothing is written before every input is checked (recipe, model path, data files and rows, the
output folder). A run folder holds ``run.json`` (the recipe it was started with); running the same
recipe again resumes it from its last checkpoint, a different one is refused unless ``overwrite``
(start over) or ``resume`` (go on with the new settings) is asked for.

Launched as several processes (``torchrun``, ``accelerate launch``), every process checks the inputs
and trains its share; only the main process writes (run record, baseline, adapter, predictions,
results) and the others wait for it at fixed points, then return the same results.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deltatune.files import atomic_write_bytes
from deltatune.training.config import EvalConfig, Recipe
from deltatune.training.data import Rows, load_split
from deltatune.training.errors import ModelPathError, RecipeError, RunFolderError
from deltatune.training.loop import FitResult, Hooks, fit, process_state
from deltatune.training.recipe import adapter_config, recipe_to_dict
from deltatune.training.tasks import Task, TaskSetup, get_task_kind, task_options

RUN_FILE = "run.json"
RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "test_predictions.jsonl"
_IGNORED = {"output.progress"}  # settings that do not change what a run computes
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model_path(path: str) -> str:
    """A local folder for ``model.path``: ``pkg:<module>`` asks the package, a Hub id passes through.

    ``config:<...>`` (a model built from a config, no weights) passes through to the task's setup.
    """
    if path.startswith("config:"):
        return path
    if path.startswith("pkg:"):
        module = path[4:]
        try:
            found = importlib.import_module(module).get_model_path()
        except ImportError:
            raise ModelPathError(
                f"model.path {path!r}: the package module {module!r} is not installed "
                f"(pip install {module.replace('_', '-')}), or set model.path to a model folder."
            ) from None
        return str(found)
    local = Path(path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelPathError(f"model.path {path!r} has no config.json; point it at a transformers model folder.")
        return str(local)
    if _HUB_ID.match(path) and not path.startswith("."):
        return path
    raise ModelPathError(f"model.path {path!r} does not exist; give a model folder, a Hub id, or pkg:<module>.")


@dataclasses.dataclass
class Inputs:
    """Everything checked before the run writes anything."""

    model_path: str
    setup: TaskSetup
    train: Rows
    valid: Rows
    test: Rows

    @property
    def task(self) -> Task:
        return self.setup.task


def prepare(recipe: Recipe) -> Inputs:
    """Check the model path, the task and its options, and read every split (bad rows name file and line)."""
    model_path = resolve_model_path(recipe.model.path)
    kind = get_task_kind(recipe.task)
    setup = kind.setup(recipe, task_options(kind, recipe.task_options), model_path)
    metric = recipe.eval.metric
    if metric and metric != "loss" and metric not in setup.task.metrics:
        raise RecipeError(
            f"eval.metric {metric!r} is not reported by task {recipe.task!r}; choose loss or one of "
            f"{', '.join(setup.task.metrics)}."
        )
    d = recipe.data
    splits: dict[str, Rows] = {}
    for split in ("train", "valid", "test"):
        file = getattr(d, f"{split}_file")
        if split != "train" and file is None and d.dataset is None:
            splits[split] = []
            continue
        limit = d.limit_train if split == "train" else d.limit_eval
        splits[split] = load_split(split, file, d.dataset, setup.required_fields, setup.label_field, limit)
    return Inputs(model_path, setup, splits["train"], splits["valid"], splits["test"])


def eval_config(recipe: Recipe, task: Task) -> EvalConfig:
    """The recipe's eval settings with an empty metric replaced by the task's first one."""
    return dataclasses.replace(recipe.eval, metric=recipe.eval.metric or task.metrics[0])


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict) and k != "options":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_run_folder(recipe: Recipe, overwrite: bool, resume: bool) -> str:
    """'new', 'resume', 'done' or 'overwrite' for the output folder; refuses another run's folder."""
    out = Path(recipe.output.dir)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return "new"
    if not out.is_dir():
        raise RunFolderError(f"output.dir {str(out)!r} is a file; choose a folder.")
    if overwrite:
        return "overwrite"
    run_file = out / RUN_FILE
    if not run_file.is_file():
        raise RunFolderError(
            f"output.dir {str(out)!r} is not empty and holds no deltatune run; choose another output.dir "
            "or pass --overwrite to delete what is there."
        )
    try:
        before = _flat(json.loads(run_file.read_text(encoding="utf-8")).get("recipe", {}))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise RunFolderError(
            f"{run_file} is not a readable run record ({exc}); pass --overwrite to start over."
        ) from exc
    now = _flat(recipe_to_dict(recipe))
    changed = sorted(k for k in before.keys() | now.keys() if k not in _IGNORED and before.get(k) != now.get(k))
    if changed and not resume:
        shown = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:5])
        raise RunFolderError(
            f"output.dir {str(out)!r} holds a different run ({shown}). Pass --overwrite to start over, "
            "--resume to go on from its last checkpoint with the new settings, or choose another output.dir."
        )
    return "done" if (out / RESULTS_FILE).is_file() and not changed else "resume"


def load_model(inputs: Inputs, seed: int) -> nn.Module:
    torch.manual_seed(seed)  # a new head starts the same way in every run
    return inputs.setup.load_model()


def split_metrics(
    model: nn.Module, inputs: Inputs, recipe: Recipe, fallback: dict[str, float] | None = None
) -> dict[str, float]:
    """Metrics on the test split; without one, ``fallback`` (the last validation) or the valid split."""
    if not inputs.test and fallback is not None:
        return fallback
    rows = inputs.test or inputs.valid
    if not rows:
        return {}
    model.eval()
    with torch.no_grad():
        return inputs.task.evaluate(model, rows, recipe.eval.batch_size)


def run_baseline(recipe: Recipe, inputs: Inputs, run_dir: Path, resume: bool) -> dict[str, Any] | None:
    """What the adapter has to beat: a trained head on a frozen model, a heuristic, or the plain model."""
    baseline = inputs.setup.baseline
    if baseline is None:
        return None
    state = process_state(recipe.train)
    done = run_dir / RESULTS_FILE
    finished = resume and done.is_file()
    state.wait_for_everyone()  # every process has looked before the main one writes
    if finished:
        return json.loads(done.read_text())
    result: dict[str, Any] | None = None
    if baseline.score is not None:
        if state.is_main_process:
            rows = inputs.test or inputs.valid
            result = {k: round(v, 4) for k, v in baseline.score(rows).items()}
            result.update(trainable_params=0, trainable_share=0.0, train_wall_s=0.0)
    else:
        model = load_model(inputs, recipe.train.seed)
        model.requires_grad_(False)
        fitted = None
        if baseline.train_only is not None:
            baseline.train_only(model)
            cfg = dataclasses.replace(
                recipe.train, lr=recipe.baseline.lr, epochs=recipe.baseline.epochs or recipe.train.epochs,
                optimizer="adamw",
            )  # fmt: skip
            fitted = fit(model, inputs.task, inputs.train, inputs.valid, cfg, eval_config(recipe, inputs.task),
                         recipe.output, run_dir, resume=resume, desc=f"baseline ({baseline.name})")  # fmt: skip
        if state.is_main_process:
            result = _summary(model, fitted, split_metrics(model, inputs, recipe, fitted.metrics if fitted else None))
    if result is not None:
        result["name"] = baseline.name
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(done, (json.dumps(result, indent=2) + "\n").encode())
    state.wait_for_everyone()
    return result if result is not None else json.loads(done.read_text())


def _summary(model: nn.Module, fitted: FitResult | None, metrics: dict[str, float]) -> dict[str, Any]:
    params = {id(p): p for p in model.parameters()}.values()
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    summary: dict[str, Any] = {
        **{k: round(v, 4) for k, v in metrics.items()},
        "trainable_params": trainable,
        "trainable_share": trainable / total,
        "train_wall_s": 0.0,
    }
    if fitted is not None:
        summary.update(
            steps=fitted.progress.step,
            best_step=fitted.progress.best_step,
            stopped_early=fitted.progress.stopped_early,
            train_wall_s=round(fitted.wall_s, 1),
            items_per_s=round(fitted.items_per_s, 1),
        )
    return summary


def run_recipe(recipe: Recipe, overwrite: bool = False, resume: bool = False) -> dict[str, Any]:
    """Train the recipe's adapter (and its baseline); returns what ``results.json`` holds."""
    import deltatune as dt

    started = time.perf_counter()
    state = process_state(recipe.train)
    mode = check_run_folder(recipe, overwrite, resume)
    state.wait_for_everyone()  # every process has seen the folder before the main one changes it
    out = Path(recipe.output.dir)
    if mode == "done":
        if state.is_main_process:
            print(f"{out} already holds this run, finished; its results are in {out / RESULTS_FILE}.")
        return json.loads((out / RESULTS_FILE).read_text())
    if recipe.train.num_threads:
        torch.set_num_threads(recipe.train.num_threads)
    inputs = prepare(recipe)
    config = adapter_config(recipe.adapter.method, recipe.adapter.options, inputs.setup.adapter_task_type)
    if inputs.setup.modules_to_save:  # a custom model's heads, as SEQ_CLS adds a transformers model's
        config.modules_to_save = list(dict.fromkeys([*(config.modules_to_save or []), *inputs.setup.modules_to_save]))
    model = dt.wrap(load_model(inputs, recipe.train.seed), config)

    if state.is_main_process:
        if mode == "overwrite":
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        run = {"recipe": recipe_to_dict(recipe), "deltatune_version": dt.__version__}
        atomic_write_bytes(out / RUN_FILE, (json.dumps(run, indent=2) + "\n").encode())
    state.wait_for_everyone()
    again = mode == "resume"

    baseline = run_baseline(recipe, inputs, out / "baseline", again) if recipe.baseline.enabled else None
    eval_cfg = eval_config(recipe, inputs.task)
    desc = f"{recipe.adapter.method.lower()} adapter"
    fitted = fit(model, inputs.task, inputs.train, inputs.valid, recipe.train, eval_cfg, recipe.output, out,
                 hooks=Hooks.for_model(model), resume=again, desc=desc)  # fmt: skip
    if not state.is_main_process:  # the main process tests, saves and reports
        state.wait_for_everyone()
        return json.loads((out / RESULTS_FILE).read_text())
    adapted = _summary(model, fitted, split_metrics(model, inputs, recipe, fitted.metrics))
    _save_adapter(model, out / "adapter")
    _save_predictions(model, inputs, recipe, out / PREDICTIONS_FILE)
    results = {
        "recipe": recipe.name,
        "task": recipe.task,
        "metrics": list(inputs.task.metrics),
        "model": recipe.model.path,
        "method": recipe.adapter.method,
        "rows": {"train": len(inputs.train), "valid": len(inputs.valid), "test": len(inputs.test)},
        "metrics_split": "test" if inputs.test else "valid",
        "baseline": baseline,
        "adapted": adapted,
        "wall_s": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": torch.get_num_threads(),
    }
    atomic_write_bytes(out / RESULTS_FILE, (json.dumps(results, indent=2) + "\n").encode())
    print_results(results, out)
    state.wait_for_everyone()
    return results


def _save_predictions(model: nn.Module, inputs: Inputs, recipe: Recipe, file: Path) -> None:
    """The adapted model's output for every test row (what ``deltatune predict`` writes), one JSON line each."""
    if inputs.setup.predict is None or not inputs.test:
        return
    model.eval()
    with torch.no_grad():
        predictions = inputs.setup.predict(model, inputs.test, recipe.eval.batch_size)
    lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)
    atomic_write_bytes(file, lines.encode())


def _save_adapter(model: Any, folder: Path) -> None:
    """Write the adapter into a temporary folder, then swap it in: never a half-written adapter."""
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def print_results(results: dict[str, Any], out: Path) -> None:
    baseline = results["baseline"]
    rows = [(f"{results['method']} adapter", results["adapted"])]
    if baseline is not None:
        rows.insert(0, (f"baseline ({baseline.get('name', 'head only')})", baseline))
    metrics = results.get("metrics") or ["accuracy", "f1"]
    split = results["metrics_split"]
    print(f"\n{results['recipe']}: {split} split, {results['rows'][split]} rows")
    width = max(len(name) for name, _ in rows) + 1
    print(f"  {'':{width}s}" + "".join(f" {m:>11s}" for m in metrics) + f" {'trainable':>10s} {'train s':>8s}")
    for name, r in rows:
        values = "".join(f" {r.get(m, float('nan')):11.4f}" for m in metrics)
        print(f"  {name:{width}s}{values} {100 * r['trainable_share']:9.3f}% {r['train_wall_s']:8.1f}")
    print(f"  wall time {results['wall_s']:.0f} s, peak memory {results['peak_rss_mb']:.0f} MB")
    print(f"  adapter: {out / 'adapter'}; plots: {out / 'loss.png'}, {out / 'eval.png'}; log: {out / 'metrics.jsonl'}")
