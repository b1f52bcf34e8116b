"""A training run killed with SIGKILL and resumed with the same command ends bit-identical."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.test_training_support import make_tiny_model_dir, tiny_recipe, write_recipe

ROOT = Path(__file__).resolve().parents[1]
STEPS = 48


def command(recipe: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "deltatune.cli.main", "train", str(recipe), f"output.dir={out}"]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT / "src")}


def newest_step(out: Path) -> int:
    steps = [int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*") if (p / "progress.json").exists()]
    return max(steps, default=0)


def kill_after_checkpoint(cmd: list[str], out: Path, min_step: int, timeout: float = 60) -> int:
    """Start the run, SIGKILL it once a checkpoint of at least ``min_step`` exists; returns that step."""
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while newest_step(out) < min_step:
            if proc.poll() is not None:
                pytest.fail(f"the run ended (rc {proc.returncode}) before it could be killed: {proc.stderr.read()!r}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint appeared in time")
            time.sleep(0.01)
        step = newest_step(out)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL
    return step


def run_in_process(recipe: Path, out: Path) -> None:
    from deltatune.training import load_recipe, run_recipe

    threads = torch.get_num_threads()
    try:
        run_recipe(load_recipe(str(recipe), [f"output.dir={out}"]))
    finally:
        torch.set_num_threads(threads)


def test_sigkill_twice_and_resume_gives_the_same_adapter(tmp_path: Path) -> None:
    model_dir = make_tiny_model_dir(tmp_path / "model")
    recipe = write_recipe(
        tmp_path / "tiny.yaml",
        tiny_recipe(model_dir, tmp_path / "unused", train={"max_steps": STEPS, "grad_accum": 2}),
    )
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    run_in_process(recipe, reference)  # same code, one thread: the same numbers as a separate process

    first = kill_after_checkpoint(command(recipe, killed), killed, min_step=4)
    assert not (killed / "adapter").exists() and first < STEPS
    # the same command resumes; kill it again further on
    second = kill_after_checkpoint(command(recipe, killed), killed, min_step=first + 8)
    assert first < second < STEPS and not (killed / "adapter").exists()
    (killed / "checkpoints" / ".tmp-step-999999-1").mkdir()  # a checkpoint cut short by a kill: ignored
    run_in_process(recipe, killed)  # and once more, to the end

    ours, theirs = (d / "adapter" / "adapter_model.safetensors" for d in (killed, reference))
    a, b = load_file(ours), load_file(theirs)
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert ours.read_bytes() == theirs.read_bytes()
    assert not list((killed / "checkpoints").glob(".tmp-*"))
    steps = [r for r in (killed / "metrics.jsonl").read_text().splitlines() if '"loss"' in r]
    assert len(steps) == STEPS // 2  # log_every=2: replayed steps are not logged twice
