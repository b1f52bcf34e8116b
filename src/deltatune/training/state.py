"""Resumable checkpoints: everything the next step depends on, written atomically.

A checkpoint ``<run>/checkpoints/step-000120/`` holds the trained tensors (for a DeltaModel also
``adapter/`` in PEFT layout), the optimizer and scheduler states, the python/numpy/torch random
states (``rng.pt``; under DDP also ``rng-rank<r>.pt`` for every other process), and ``progress.json``
(step, epoch, next batch, data-order seed, best metric so far, number of processes).
It is written into a temporary folder beside it and renamed into place, so a run killed at any
moment leaves either the complete checkpoint or none; resuming from it replays the remaining steps
exactly, so the final adapter is bit-identical to an uninterrupted run's (same machine, CPU).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from deltatune.files import atomic_write, atomic_write_bytes

CHECKPOINTS = "checkpoints"
_PREFIX = "step-"
_TMP = ".tmp-"


@dataclass
class Progress:
    """Where a run stands after ``step`` optimizer steps."""

    step: int = 0
    epoch: int = 0  # epoch of the next batch
    batch: int = 0  # index of the next optimizer step's batch within that epoch
    data_seed: int = 0  # the epoch's data order is a permutation seeded by data_seed + epoch
    best_metric: float | None = None
    best_step: int = 0
    best_metrics: dict[str, float] | None = None  # every metric of the best evaluation
    bad_evals: int = 0  # evaluations since the last improvement (early stopping)
    stopped_early: bool = False
    world: int = 1  # processes that trained (DDP): a step's rows and the random states depend on it


def trained_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The live tensors a checkpoint must restore: every adapter's (buffers included) for a
    DeltaModel, the trainable parameters for any other model."""
    from deltatune.model import DeltaModel

    if isinstance(model, DeltaModel):
        from deltatune.checkpoint import adapter_state

        return {f"{name}/{key}": t for name in model.peft_config for key, t in adapter_state(model, name).items()}
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of :func:`trained_tensors` (e.g. the best adapter so far)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in trained_tensors(model).items()}


def restore(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    live = trained_tensors(model)
    if set(live) != set(tensors):
        missing, extra = sorted(set(live) - set(tensors)), sorted(set(tensors) - set(live))
        from deltatune.training.errors import RunFolderError

        raise RunFolderError(
            f"The checkpoint does not fit this model (missing {missing[:3]}, unexpected {extra[:3]}); "
            "it was written by another recipe. Start over with --overwrite."
        )
    with torch.no_grad():
        for key, tensor in tensors.items():
            live[key].copy_(tensor)


def rng_state() -> dict[str, Any]:
    import numpy as np

    name, keys, pos, has_gauss, gauss = cast(tuple[str, Any, int, int, float], np.random.get_state())
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype("int64")), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype("uint32"), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_object(obj: Any, path: str) -> None:
    torch.save(obj, path)


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(data, tmp, metadata={"format": "pt"}))


def save_checkpoint(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    progress: Progress,
    best: dict[str, torch.Tensor] | None,
    keep: int,
    rngs: list[dict[str, Any]] | None = None,
) -> Path:
    """Write ``checkpoints/step-N`` atomically, then drop all but the ``keep`` newest ones.

    ``rngs``: every process's :func:`rng_state` in rank order (DDP); by default this process's."""
    from deltatune.model import DeltaModel

    root = run_dir / CHECKPOINTS
    final = root / f"{_PREFIX}{progress.step:06d}"
    tmp = root / f"{_TMP}{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _save_tensors(tmp / "trained.safetensors", trained_tensors(model))
    if best is not None:
        _save_tensors(tmp / "best.safetensors", best)
    if isinstance(model, DeltaModel):  # the same tensors in PEFT layout, usable as they are
        model.save_pretrained(tmp / "adapter")
    atomic_write(tmp / "optimizer.pt", lambda p: torch.save(optimizer.state_dict(), p))
    atomic_write(tmp / "scheduler.pt", lambda p: torch.save(scheduler.state_dict(), p))
    for rank, state in enumerate(rngs or [rng_state()]):
        atomic_write(tmp / _rng_file(rank), functools.partial(_save_object, state))
    atomic_write_bytes(tmp / "progress.json", (json.dumps(dataclasses.asdict(progress), indent=1) + "\n").encode())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    for old in checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _rng_file(rank: int) -> str:
    return "rng.pt" if rank == 0 else f"rng-rank{rank}.pt"


def checkpoints(run_dir: Path, clean: bool = True) -> list[Path]:
    """Complete checkpoints, oldest first; with ``clean`` (the main process's job) unfinished temporary
    folders are removed."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    for stale in root.glob(f"{_TMP}*") if clean else []:
        shutil.rmtree(stale, ignore_errors=True)
    found = [p for p in root.glob(f"{_PREFIX}*") if (p / "progress.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX) :]))


def load_checkpoint(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, rank: int = 0, world: int = 1
) -> tuple[Progress, dict[str, torch.Tensor] | None]:
    """Restore everything :func:`save_checkpoint` wrote (process ``rank`` of ``world`` takes its own random
    state); returns the progress and the best snapshot."""
    from safetensors.torch import load_file

    progress = Progress(**json.loads((folder / "progress.json").read_text()))
    if progress.world != world:
        from deltatune.training.errors import RunFolderError

        raise RunFolderError(
            f"{folder} was written by a run of {progress.world} process(es), this one has {world}: each step's rows "
            f"and random states depend on it. Launch {progress.world} process(es) to resume it, or start over "
            "with --overwrite."
        )
    restore(model, load_file(folder / "trained.safetensors"))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    set_rng_state(torch.load(folder / _rng_file(rank), weights_only=True))
    best = load_file(folder / "best.safetensors") if (folder / "best.safetensors").is_file() else None
    return progress, best


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - not every platform opens folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
