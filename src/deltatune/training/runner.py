"""Run a recipe end to end: check everything, train a baseline and the adapter, report both.

Nothing is written before every input is checked (recipe, model path, data files and rows, the
output folder). A run folder holds ``run.json`` (the recipe it was started with); running the same
recipe again resumes it from its last checkpoint, a different one is refused unless ``overwrite``
(start over) or ``resume`` (go on with the new settings) is asked for.
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
from deltatune.training.config import Recipe
from deltatune.training.data import Rows, load_split
from deltatune.training.errors import ModelPathError, RunFolderError
from deltatune.training.loop import FitResult, Hooks, fit
from deltatune.training.recipe import adapter_config, recipe_to_dict
from deltatune.training.tasks import PairClassification

RUN_FILE = "run.json"
RESULTS_FILE = "results.json"
_IGNORED = {"output.progress"}  # settings that do not change what a run computes
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model_path(path: str) -> str:
    """A local folder for ``model.path``: ``pkg:<module>`` asks the package, a Hub id passes through."""
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
    tokenizer: Any
    task: PairClassification
    train: Rows
    valid: Rows
    test: Rows


def prepare(recipe: Recipe) -> Inputs:
    """Check the model path and read every split (bad rows raise naming the file and line)."""
    from transformers import AutoTokenizer

    model_path = resolve_model_path(recipe.model.path)
    d = recipe.data
    required = [*d.text_fields, d.label_field]
    splits: dict[str, Rows] = {}
    for split in ("train", "valid", "test"):
        file = getattr(d, f"{split}_file")
        if split != "train" and file is None and d.dataset is None:
            splits[split] = []
            continue
        limit = d.limit_train if split == "train" else d.limit_eval
        splits[split] = load_split(split, file, d.dataset, required, d.label_field, limit)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
    except OSError as exc:
        raise ModelPathError(f"Could not load a tokenizer from model.path {recipe.model.path!r}: {exc}") from exc
    task = PairClassification(tokenizer, d.text_fields, d.label_field, recipe.model.num_labels, recipe.model.max_length)
    return Inputs(model_path, tokenizer, task, splits["train"], splits["valid"], splits["test"])


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


def load_model(path: str, num_labels: int, seed: int) -> nn.Module:
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    torch.manual_seed(seed)
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # "some weights were newly initialized": expected for a new head
    hf_logging.disable_progress_bar()
    try:
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    except OSError as exc:
        raise ModelPathError(f"Could not load the model at {path!r}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def split_metrics(model: nn.Module, inputs: Inputs, recipe: Recipe, fallback: dict[str, float]) -> dict[str, float]:
    if not inputs.test:
        return fallback
    model.eval()
    with torch.no_grad():
        return inputs.task.evaluate(model, inputs.test, recipe.eval.batch_size)


def run_baseline(recipe: Recipe, inputs: Inputs, run_dir: Path, resume: bool) -> dict[str, Any]:
    """Frozen encoder, trained classification head: what the adapter has to beat."""
    from deltatune.integrations.transformers import TASK_HEADS

    done = run_dir / RESULTS_FILE
    if resume and done.is_file():
        return json.loads(done.read_text())
    model = load_model(inputs.model_path, recipe.model.num_labels, recipe.train.seed)
    model.requires_grad_(False)
    heads = [m for n, m in model.named_modules() if n.split(".")[-1] in TASK_HEADS["SEQ_CLS"]]
    for head in heads[-1:]:
        head.requires_grad_(True)
    cfg = dataclasses.replace(
        recipe.train, lr=recipe.baseline.lr, epochs=recipe.baseline.epochs or recipe.train.epochs, optimizer="adamw"
    )
    fitted = fit(model, inputs.task, inputs.train, inputs.valid, cfg, recipe.eval, recipe.output, run_dir,
                 resume=resume, desc="baseline (head only)")  # fmt: skip
    result = _summary(model, fitted, split_metrics(model, inputs, recipe, fitted.metrics))
    atomic_write_bytes(done, (json.dumps(result, indent=2) + "\n").encode())
    return result


def _summary(model: nn.Module, fitted: FitResult, metrics: dict[str, float]) -> dict[str, Any]:
    params = {id(p): p for p in model.parameters()}.values()
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    return {
        **{k: round(v, 4) for k, v in metrics.items()},
        "trainable_params": trainable,
        "trainable_share": trainable / total,
        "steps": fitted.progress.step,
        "best_step": fitted.progress.best_step,
        "stopped_early": fitted.progress.stopped_early,
        "train_wall_s": round(fitted.wall_s, 1),
        "examples_per_s": round(fitted.examples_per_s, 1),
    }


def run_recipe(recipe: Recipe, overwrite: bool = False, resume: bool = False) -> dict[str, Any]:
    """Train the recipe's adapter (and its baseline); returns what ``results.json`` holds."""
    import deltatune as dt

    started = time.perf_counter()
    mode = check_run_folder(recipe, overwrite, resume)
    out = Path(recipe.output.dir)
    if mode == "done":
        print(f"{out} already holds this run, finished; its results are in {out / RESULTS_FILE}.")
        return json.loads((out / RESULTS_FILE).read_text())
    if recipe.train.num_threads:
        torch.set_num_threads(recipe.train.num_threads)
    inputs = prepare(recipe)
    config = adapter_config(recipe.adapter.method, recipe.adapter.options, "SEQ_CLS")
    model = dt.wrap(load_model(inputs.model_path, recipe.model.num_labels, recipe.train.seed), config)

    if mode == "overwrite":
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    run = {"recipe": recipe_to_dict(recipe), "deltatune_version": dt.__version__}
    atomic_write_bytes(out / RUN_FILE, (json.dumps(run, indent=2) + "\n").encode())
    again = mode == "resume"

    baseline = run_baseline(recipe, inputs, out / "baseline", again) if recipe.baseline.enabled else None
    desc = f"{recipe.adapter.method.lower()} adapter"
    fitted = fit(model, inputs.task, inputs.train, inputs.valid, recipe.train, recipe.eval, recipe.output, out,
                 hooks=Hooks.for_model(model), resume=again, desc=desc)  # fmt: skip
    adapted = _summary(model, fitted, split_metrics(model, inputs, recipe, fitted.metrics))
    _save_adapter(model, out / "adapter")
    results = {
        "recipe": recipe.name,
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
    return results


def _save_adapter(model: Any, folder: Path) -> None:
    """Write the adapter into a temporary folder, then swap it in: never a half-written adapter."""
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def print_results(results: dict[str, Any], out: Path) -> None:
    rows = [("baseline (head only)", results["baseline"]), (f"{results['method']} adapter", results["adapted"])]
    print(f"\n{results['recipe']}: {results['metrics_split']} split, {results['rows'][results['metrics_split']]} rows")
    print(f"  {'':22s} {'accuracy':>9s} {'F1':>7s} {'trainable':>10s} {'train s':>8s}")
    for name, r in rows:
        if r is not None:
            print(f"  {name:22s} {r.get('accuracy', float('nan')):9.3f} {r.get('f1', float('nan')):7.3f} "
                  f"{100 * r['trainable_share']:9.3f}% {r['train_wall_s']:8.1f}")  # fmt: skip
    print(f"  wall time {results['wall_s']:.0f} s, peak memory {results['peak_rss_mb']:.0f} MB")
    print(f"  adapter: {out / 'adapter'}; plots: {out / 'loss.png'}, {out / 'eval.png'}; log: {out / 'metrics.jsonl'}")
