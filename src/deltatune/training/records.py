"""The run's records: a JSONL metrics log and PNG plots of the loss and evaluation curves."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from deltatune.files import atomic_write, atomic_write_bytes

METRICS = "metrics.jsonl"


class MetricsLog:
    """Append-only ``metrics.jsonl``: one JSON object per line, flushed as it is written.

    Training records carry ``loss``/``lr``/``items_per_s`` (items as the task counts them: examples or
    target tokens); evaluation records carry
    ``eval_<metric>``. Every record has ``step`` and ``epoch``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a killed run
                continue
        return out

    def truncate(self, step: int) -> None:
        """Keep only records up to ``step`` (resuming from that step's checkpoint replays the rest)."""
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    def write(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def write_plots(records: list[dict[str, Any]], folder: Path, title: str = "") -> list[Path]:
    """``loss.png`` (training loss, and evaluation loss if any) and ``eval.png`` (the other
    evaluation metrics) in ``folder``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if "loss" in r]
    evals = [r for r in records if any(k.startswith("eval_") for k in r)]
    written: list[Path] = []
    if train:
        fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", color="tab:blue")
        ev = [r for r in evals if "eval_loss" in r]
        if ev:
            ax.plot([r["step"] for r in ev], [r["eval_loss"] for r in ev], "o-", label="eval loss", color="tab:orange")
        ax.set(xlabel="optimizer step", ylabel="loss", title=f"{title} loss".strip())
        ax.grid(alpha=0.3)
        ax.legend()
        written.append(_save(fig, folder / "loss.png"))
    names = sorted({k for r in evals for k in r if k.startswith("eval_") and k != "eval_loss"})
    if names:
        fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
        for name in names:
            points = [(r["step"], r[name]) for r in evals if name in r and math.isfinite(r[name])]
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=name.removeprefix("eval_"))
        ax.set(xlabel="optimizer step", ylabel="metric", title=f"{title} evaluation".strip())
        ax.grid(alpha=0.3)
        ax.legend()
        written.append(_save(fig, folder / "eval.png"))
    plt.close("all")
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path
