"""Training step of VeRA, FourierFT and HRA: deltatune vs HF PEFT, side by side.

One step = forward (labels = input_ids) + backward + AdamW step over the trainable parameters, on
a tiny Llama (hidden 512, ffn 1376, 4 layers, 8 heads, vocab 8000), batch 4 x seq 128, fp32,
targets q_proj, v_proj, down_proj. Methods: VeRA r=256 (PEFT's default), FourierFT n_frequency=1000
scaling=300, HRA r=8. deltatune and PEFT steps are interleaved (A B A B ...) and medians reported.

    .venv/bin/python benchmarks/bench_step_vera_fourierft_hra.py [--quick] [--repeats N] [--threads N]

Medians of wall time and of process CPU time (the steadier one on a busy machine, with --threads 1).
Target: deltatune / PEFT <= 1.0 for every method.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from _common import cpu_model, tiny_llama, train_step

warnings.filterwarnings("ignore")

TARGETS = ["q_proj", "v_proj", "down_proj"]
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "VeRA": ("VeraConfig", dict(r=256, target_modules=TARGETS, init_weights=False)),
    "FourierFT": ("FourierFTConfig", dict(n_frequency=1000, scaling=300.0, target_modules=TARGETS)),
    "HRA": ("HRAConfig", dict(r=8, target_modules=TARGETS, init_weights=False)),
}


def interleaved(
    cases: dict[str, Callable[[], None]], repeats: int, warmup: int = 1
) -> dict[str, dict[str, list[float]]]:
    """Warm each case up, then time ``repeats`` rounds of A B ..., the order alternating per round.

    Both clocks are kept: wall time, and this process's CPU time, which on a shared machine (other
    jobs stealing the cores) is the steadier measure of the work done, with ``--threads 1``.
    """
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in cases}
    names = list(cases)
    for i in range(repeats):
        for name in names if i % 2 == 0 else reversed(names):
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            cases[name]()
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    return times


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 2 repeats: a smoke run")
    parser.add_argument("--repeats", type=int, default=0, help="timed steps per library and method")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 7)
    batch, seq = (2, 16) if args.quick else (4, 128)

    import peft
    import transformers

    import deltatune as dt

    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print(
        f"# {now} | {cpu_model()} | threads={torch.get_num_threads()} | torch {torch.__version__} "
        f"transformers {transformers.__version__} peft {peft.__version__} deltatune {dt.__version__}"
    )
    print(f"# train step, Llama {'quick' if args.quick else 'h512 ffn1376 L4 vocab8000'}, b{batch}x{seq}, fp32")
    ids = torch.randint(0, 256 if args.quick else 8000, (batch, seq), generator=torch.Generator().manual_seed(0))
    ratios: dict[str, float] = {}
    for method in args.methods:
        config_name, kwargs = METHODS[method]
        ours = dt.wrap(tiny_llama(args.quick), getattr(dt, config_name)(**kwargs))
        theirs = peft.get_peft_model(tiny_llama(args.quick), getattr(peft, config_name)(**kwargs))
        n_ours = sum(p.numel() for p in ours.parameters() if p.requires_grad)
        n_theirs = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
        assert n_ours == n_theirs, f"{method}: deltatune trains {n_ours} parameters, PEFT {n_theirs}"
        times = interleaved({"deltatune": train_step(ours, ids), "peft": train_step(theirs, ids)}, repeats)
        for clock in ("wall", "cpu"):
            ours_s = statistics.median(times["deltatune"][clock])
            theirs_s = statistics.median(times["peft"][clock])
            ratio = ours_s / theirs_s
            ratios[f"{method} {clock}"] = ratio
            print(
                f"{method:10s} {clock:4s} params {n_ours:>8,d} | deltatune {ours_s * 1e3:8.1f} ms | "
                f"PEFT {theirs_s * 1e3:8.1f} ms | deltatune/PEFT {ratio:.3f} "
                f"(target <= 1.0: {'ok' if ratio <= 1.0 else 'SLOWER'})"
            )
        del ours, theirs
        gc.collect()
    return ratios


if __name__ == "__main__":
    main(sys.argv[1:])
