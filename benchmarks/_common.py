"""Shared helpers for the benchmarks: machine info, the tiny Llama, interleaved timing, reporting.

Every benchmark times deltatune and its comparison points *interleaved* (A B A B ...) and reports
medians, so background load on a shared machine hits both sides equally. Each script prints its own
table and, with ``--json PATH``, writes its rows for ``run_all.py``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

warnings.filterwarnings("ignore")


# --------------------------------------------------------------------------------- environment
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def source_revision(path: str) -> str:
    """The git commit of the deltatune source in use, with '+dirty' when src/ has local changes."""
    import subprocess

    if os.environ.get("DELTATUNE_BENCH_REV"):  # set when benchmarking a copy outside the repo
        return os.environ["DELTATUNE_BENCH_REV"]
    folder = os.path.dirname(path)
    try:
        commit = subprocess.run(
            ["git", "-C", folder, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", folder, "status", "--porcelain", "--", "."], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def environment() -> dict[str, str]:
    import peft
    import transformers

    import deltatune

    return {
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu_model(),
        "nproc": str(os.cpu_count()),
        "loadavg": f"{os.getloadavg()[0]:.1f}",  # other jobs on the machine: high values mean noisy ratios
        "torch_threads": str(torch.get_num_threads()),
        "clock": _clock_name,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "deltatune": f"{deltatune.__version__} ({source_revision(deltatune.__file__)})",
    }


def print_environment() -> None:
    env = environment()
    print(
        f"# {env['date']} | {env['cpu']} | nproc={env['nproc']} loadavg={env['loadavg']} "
        f"threads={env['torch_threads']} clock={env['clock']} | "
        f"python {env['python']} torch {env['torch']} transformers {env['transformers']} "
        f"peft {env['peft']} deltatune {env['deltatune']}"
    )


# --------------------------------------------------------------------------------- models
TINY_LLAMA = dict(
    hidden_size=512,
    intermediate_size=1376,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=8,
    vocab_size=8000,  # the brief allows 8000 (stated); --vocab 32000 gives the full Llama vocabulary
    max_position_embeddings=1024,
)
QUICK_LLAMA = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    vocab_size=256,
    max_position_embeddings=128,
)


def llama_config(quick: bool, **overrides: Any):
    from transformers import LlamaConfig

    values = {**(QUICK_LLAMA if quick else TINY_LLAMA), **overrides}
    return LlamaConfig(**values, attn_implementation="sdpa", tie_word_embeddings=False)


def tiny_llama(quick: bool, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(quick, **overrides))
    return model


def train_step(model: torch.nn.Module, ids: torch.Tensor) -> Callable[[], None]:
    """One training step of ``model`` on the causal-LM batch ``ids``: forward with labels, backward,
    AdamW (lr 1e-4) over the trainable parameters, zero_grad; synchronised on CUDA so timings hold."""
    model.to(ids.device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ids.device.type == "cuda":
            torch.cuda.synchronize()

    return step


def llama_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"vocab_size": args.vocab} if getattr(args, "vocab", None) else {}


def describe_llama(cfg) -> str:
    return (
        f"Llama h={cfg.hidden_size} ffn={cfg.intermediate_size} L={cfg.num_hidden_layers} "
        f"heads={cfg.num_attention_heads} vocab={cfg.vocab_size}"
    )


# --------------------------------------------------------------------------------- timing
# With one torch thread the benchmarks time the process's CPU time (user + system, page faults
# included): on a shared 2-core machine it ignores the time the process waits for the CPU, so
# ratios stay repeatable while other jobs run. ``--clock wall`` (and any multi-thread run) uses
# wall-clock time instead, since CPU time would count idle spinning threads.
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}
_clock_name = "wall"


def clock_name() -> str:
    return _clock_name


def now() -> float:
    return CLOCKS[_clock_name]()


def interleaved(
    cases: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    setup: dict[str, Callable[[], Any]] | None = None,
) -> dict[str, list[float]]:
    """Run each case ``warmup`` times, then ``repeats`` rounds of A B C ... (order rotates).

    ``setup[name]`` (optional) runs untimed before every timed call of ``name`` and its result is
    passed to the case (for work that must be excluded, e.g. building a fresh base model).
    """
    names = list(cases)
    times: dict[str, list[float]] = {n: [] for n in names}

    def once(name: str) -> float:
        arg = setup[name]() if setup and name in setup else None
        gc.collect()
        fn = cases[name]
        start = now()
        if arg is None:
            fn()
        else:
            fn(arg)  # type: ignore[call-arg]
        elapsed = now() - start
        del arg
        return elapsed

    for _ in range(warmup):
        for name in names:
            once(name)
    for i in range(repeats):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            times[name].append(once(name))
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# --------------------------------------------------------------------------------- reporting
def paired_ratio(times: dict[str, list[float]], ours: str, ref: str) -> float:
    """Median over rounds of ours/ref timed in the same round (robust to slow drifts in load)."""
    return median([a / b for a, b in zip(times[ours], times[ref], strict=True)])


@dataclass
class Row:
    bench: str
    metric: str  # what the ratio compares, e.g. "deltatune / PEFT"
    ours_s: float  # median time of deltatune
    ref_s: float  # median time of the reference
    ratio: float  # median of the per-round ratios ours / ref
    target: float | None  # the ratio must be <= target (None: for information only)
    note: str = ""

    @classmethod
    def compare(
        cls,
        bench: str,
        metric: str,
        times: dict[str, list[float]],
        ours: str,
        ref: str,
        target: float | None,
        note: str,
    ) -> Row:
        return cls(bench, metric, median(times[ours]), median(times[ref]), paired_ratio(times, ours, ref), target, note)

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.ratio <= self.target


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    return f"{seconds * 1e3:.1f} ms"


def table(rows: Sequence[Row]) -> str:
    header = (
        f"| {'benchmark':<12} | {'compared':<38} | {'deltatune':>10} | {'reference':>10} | {'ratio':>6} "
        "| target | met |"
    )
    lines = [header, "|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|"]
    for r in rows:
        lines.append(
            f"| {r.bench:<12} | {r.metric:<38} | {fmt_time(r.ours_s):>10} | {fmt_time(r.ref_s):>10} | "
            f"{r.ratio:>5.2f}x | {_target(r.target):<6} | {_met(r.met):<3} |"
        )
    return "\n".join(lines)


def _target(target: float | None) -> str:
    return "info" if target is None else f"<={target:.2f}"


def _met(met: bool | None) -> str:
    return "-" if met is None else ("yes" if met else "NO")


def print_times(times: dict[str, list[float]]) -> None:
    for name, values in times.items():
        spread = f"min {fmt_time(min(values))}, max {fmt_time(max(values))}"
        print(f"  {name:<34} median {fmt_time(median(values)):>10}  ({spread}, n={len(values)})")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes, few repeats: a smoke run")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per case (default per benchmark)")
    p.add_argument("--json", default=None, help="also write the result rows to this JSON file")
    p.add_argument("--vocab", type=int, default=None, help="tiny Llama vocabulary size (default 8000)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: repeatable on a shared machine; 0 = torch's default)",
    )
    p.add_argument(
        "--clock",
        choices=["auto", "cpu", "wall"],
        default="auto",
        help="what to time: process CPU time or wall time (auto: cpu with 1 thread, else wall)",
    )
    p.add_argument("--no-env", action="store_true", help="do not print the machine / version line")
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    global _clock_name
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    auto = "cpu" if torch.get_num_threads() == 1 else "wall"
    _clock_name = auto if args.clock == "auto" else args.clock
    return args


def finish(args: argparse.Namespace, rows: Sequence[Row]) -> None:
    print(table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([asdict(r) for r in rows], f, indent=1)
