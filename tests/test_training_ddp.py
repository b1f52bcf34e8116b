"""The training loop under DDP: 2 processes on the gloo backend (CPU), launched with torchrun as a user would.

One launch runs ``deltatune train`` three times in the same two processes (to pay the start-up once);
a second launch resumes a stopped run. Every process records, through a Python audit hook, each file
it creates, opens for writing, renames or deletes under the runs' folder: only rank 0 may write.

- (a) both ranks finish; rank 1 writes nothing; the records are whole (no line written twice).
- (b) 2 processes x batch 4 give the adapter of 1 process x batch 8 (atol 1e-5): a step's 8 rows are the
  same rows (rank r takes chunk[r::2]) and the loss is the mean over all of them. Dropout is set to 0
  (LoRA's and the base model's): each process draws its own masks, so a mask of batch 8 in one process
  cannot be the same as two masks of batch 4.
- (c) a DDP run stopped after a checkpoint (train.max_steps) and resumed in a fresh launch ends bit-identical
  to an uninterrupted DDP run, dropout on: each rank's random state is saved and restored.

Run as a script (``python tests/test_training_ddp.py AUDIT PLAN``) it is the worker each process runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STEPS = 8  # 64 rows / (batch 4 x 2 processes)
STOP = 6  # the stopped run: its newest checkpoint is step 4 (save_every 4; none is written at the last step)

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _worker(audit: str, plan: str) -> int:
    """Run each argv of ``plan`` through ``deltatune``'s main, recording this process's writes under the runs root."""
    rank = int(os.environ["RANK"])
    argvs: list[list[str]] = json.loads(Path(plan).read_text())
    watched = str(Path(plan).parent / "runs")
    events: list[list[str]] = []

    def under(path: Any) -> bool:
        if isinstance(path, (bytes, os.PathLike)):
            path = os.fsdecode(path)
        return isinstance(path, str) and os.path.abspath(path).startswith(watched)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and under(args[0]):
            mode, flags = args[1], args[2]
            if (mode and any(c in mode for c in "wax+")) or (not mode and flags & _WRITE_FLAGS):
                events.append([event, os.fsdecode(args[0])])
        elif event in ("os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate"):
            paths = [a for a in args[:2] if under(a)]
            if paths:
                events.append([event, *(os.fsdecode(p) for p in paths)])

    sys.addaudithook(hook)
    from deltatune.cli.main import main

    rc = 0
    try:
        for argv in argvs:
            rc = main(argv)
            if rc:
                break
    finally:
        Path(f"{audit}-rank{rank}.json").write_text(json.dumps(events))
    return rc


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1], sys.argv[2]))

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from tests.test_training_support import make_tiny_model_dir, tiny_recipe, write_recipe  # noqa: E402

# the launches use both cores: pytest-xdist (--dist loadgroup) keeps every test of this group on one worker
pytestmark = pytest.mark.xdist_group("ddp")


def launch(tmp: Path, name: str, argvs: list[list[str]]) -> dict[int, list[list[str]]]:
    """``torchrun --standalone --nproc-per-node 2`` this file's worker on ``argvs``; returns each rank's writes."""
    plan = tmp / f"{name}.json"
    plan.write_text(json.dumps(argvs))
    audit = tmp / "audit" / name
    audit.parent.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           __file__, str(audit), str(plan)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT / "src")}
    env.pop("ACCELERATE_USE_CPU", None)  # a CPU-only machine must be found out without it
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"the launch failed (rc {done.returncode}):\n{done.stderr[-4000:]}"
    return {rank: json.loads(Path(f"{audit}-rank{rank}.json").read_text()) for rank in (0, 1)}


def train_argv(recipe: Path, out: Path, *extra: str) -> list[str]:
    return ["train", str(recipe), f"output.dir={out}", *extra]


def adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "adapter" / "adapter_model.safetensors")


def records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def train_records(run: Path) -> list[tuple[int, float, float]]:
    return [(r["step"], r["loss"], r["lr"]) for r in records(run) if "loss" in r]


def test_ddp_two_processes(tmp_path: Path) -> None:
    model = make_tiny_model_dir(tmp_path / "model")
    no_dropout = Path(shutil.copytree(model, tmp_path / "model-no-dropout"))
    config = json.loads((no_dropout / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (no_dropout / "config.json").write_text(json.dumps(config))

    runs = tmp_path / "runs"
    common = {"data": {"limit_train": 64}, "eval": {"every": 5}, "output": {"save_every": 4, "log_every": 2}}
    exact = tiny_recipe(no_dropout, runs / "unused", **{**common, "eval": {"every": 5, "keep_best": False}})
    exact["adapter"]["options"]["lora_dropout"] = 0.0
    single = write_recipe(tmp_path / "single.yaml", {**exact, "train": {**exact["train"], "batch_size": 8}})
    ddp = write_recipe(tmp_path / "ddp.yaml", {**exact, "train": {**exact["train"], "batch_size": 4}})
    # dropout on (LoRA's 0.1 and the model's); a constant rate, so stopping early does not change the schedule;
    # with the baseline (a trained head), which the resumed run takes from the first launch's results
    dropout = write_recipe(tmp_path / "dropout.yaml", tiny_recipe(
        model, runs / "unused", **common, train={"batch_size": 4, "schedule": "constant", "warmup": 0},
        baseline={"enabled": True}))  # fmt: skip

    first = launch(tmp_path, "first", [
        train_argv(ddp, runs / "ddp"),
        train_argv(dropout, runs / "reference"),
        train_argv(dropout, runs / "resumed", f"train.max_steps={STOP}"),
    ])  # fmt: skip
    stale = runs / "resumed" / "checkpoints" / ".tmp-step-999999-1"
    stale.mkdir()  # a checkpoint a killed run left unfinished: rank 0 removes it, rank 1 leaves it alone
    second = launch(tmp_path, "second", [train_argv(dropout, runs / "resumed", "--resume")])

    # (a) rank 1 wrote nothing; rank 0 wrote the records, checkpoints and adapters (the audit sees writes)
    assert first[1] == [] and second[1] == []
    written = {e[-1] for e in first[0] + second[0]}
    for run in ("ddp", "reference", "resumed"):
        assert {str(runs / run / "adapter"), str(runs / run / "results.json")} <= written
        assert any(p.startswith(str(runs / run / "checkpoints" / "step-000004")) for p in written)
    assert ["shutil.rmtree", str(stale)] in second[0] and not stale.exists()
    for run in ("ddp", "reference"):  # a step is one optimizer step of both processes: 12, not 24
        assert [s for s, _, _ in train_records(runs / run)] == list(range(2, STEPS + 1, 2))
        assert [r["step"] for r in records(runs / run) if "eval_accuracy" in r] == [5, STEPS]
        results = json.loads((runs / run / "results.json").read_text())
        assert results["adapted"]["steps"] == STEPS
        for png in ("loss.png", "eval.png"):
            assert (runs / run / png).read_bytes()[:4] == b"\x89PNG"

    # (b) 2 x batch 4 == 1 x batch 8, and the logged loss is the mean over both processes' rows
    from tests.test_training_resume import run_in_process

    run_in_process(single, runs / "single")
    ours, theirs = adapter(runs / "ddp"), adapter(runs / "single")
    assert set(ours) == set(theirs)
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-5, rtol=0, msg=key)
    logged = zip(train_records(runs / "ddp"), train_records(runs / "single"), strict=True)
    for (s1, loss1, lr1), (s2, loss2, lr2) in logged:
        assert s1 == s2 and lr1 == pytest.approx(lr2) and loss1 == pytest.approx(loss2, abs=1e-5)

    # (c) stopped at step 6, resumed from step 4 in a fresh launch: bit-identical to the uninterrupted run
    ours, theirs = adapter(runs / "resumed"), adapter(runs / "reference")
    assert set(ours) == set(theirs)
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    assert train_records(runs / "resumed") == train_records(runs / "reference")
    assert {p.name for p in (runs / "resumed" / "checkpoints").iterdir()} == {"step-000004"}
    baselines = [json.loads((runs / run / "results.json").read_text())["baseline"] for run in ("reference", "resumed")]
    assert baselines[0]["steps"] == STEPS and baselines[1]["steps"] == STOP  # the stopped run's, kept on resume
    assert str(runs / "resumed" / "baseline" / "results.json") not in {e[-1] for e in second[0]}
