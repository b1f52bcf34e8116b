"""OFT and BOFT training step: deltatune vs HF PEFT, side by side.

One step = forward (labels = input_ids) + backward + AdamW step over the trainable parameters,
on a tiny Llama (hidden 512, ffn 1376, 4 layers, 8 heads, vocab 8000), batch 4 x seq 128, fp32,
targets q_proj, v_proj, down_proj. Methods:

- OFT, oft_block_size=32, Cayley-Neumann series (PEFT's default);
- OFT, oft_block_size=32, exact Cayley transform (a batched solve per layer);
- BOFT, boft_block_size=32, one butterfly factor (PEFT builds more factors only with its CUDA
  extension, so one factor is what both libraries run on CPU).

deltatune and PEFT steps are interleaved (A B B A A B ...) and medians reported, so background
load hits both sides alike; "paired" is the median of the ratios of back-to-back steps, which
drifting load disturbs least. With one torch thread (the default) a step is timed by the
process's CPU time, which ignores the time spent waiting for a CPU on a shared machine; with more
threads (``--threads N``) by wall-clock time. Target: deltatune / PEFT <= 1.0 for every method.

    .venv/bin/python benchmarks/bench_step_oft_boft.py [--quick] [--repeats N] [--threads T]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

warnings.filterwarnings("ignore")

FULL = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8, vocab_size=8000)
QUICK = dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4, vocab_size=512)
TARGETS = ["q_proj", "v_proj", "down_proj"]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def tiny_llama(quick: bool) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    sizes = QUICK if quick else FULL
    cfg = LlamaConfig(**sizes, num_key_value_heads=sizes["num_attention_heads"], max_position_embeddings=512)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def methods(block: int) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    """name -> (deltatune config factory, PEFT config factory)."""
    import peft

    import deltatune as dt

    oft = dict(r=0, oft_block_size=block, target_modules=TARGETS, init_weights=False)
    exact = dict(oft, use_cayley_neumann=False)
    boft = dict(boft_block_size=block, target_modules=TARGETS, init_weights=False)
    return {
        "OFT (Neumann)": (lambda: dt.OFTConfig(**oft), lambda: peft.OFTConfig(**oft)),
        "OFT (exact Cayley)": (lambda: dt.OFTConfig(**exact), lambda: peft.OFTConfig(**exact)),
        "BOFT (1 factor)": (lambda: dt.BOFTConfig(**boft), lambda: peft.BOFTConfig(**boft)),
    }


class Trainer:
    """One model with its optimizer and a fixed batch; ``step()`` returns its wall time."""

    def __init__(self, model: torch.nn.Module, batch: int, seq: int, vocab: int) -> None:
        self.model = model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-4)
        g = torch.Generator().manual_seed(1)
        self.ids = torch.randint(0, vocab, (batch, seq), generator=g)

    def step(self, clock: Callable[[], float]) -> float:
        gc.collect()
        start = clock()
        loss = self.model(input_ids=self.ids, labels=self.ids).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return clock() - start


def build(name: str, factories: tuple[Callable[[], Any], Callable[[], Any]], base: torch.nn.Module, args) -> dict:
    import peft

    import deltatune as dt

    vocab = base.config.vocab_size
    ours = dt.wrap(copy.deepcopy(base), factories[0]())
    theirs = peft.get_peft_model(copy.deepcopy(base), factories[1]())
    n_ours = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    n_theirs = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert n_ours == n_theirs, f"{name}: {n_ours} vs {n_theirs} trainable parameters"
    return {
        "deltatune": Trainer(ours, args.batch, args.seq, vocab),
        "peft": Trainer(theirs, args.batch, args.seq, vocab),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small model and few repeats (a smoke run)")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per side (default 20, quick 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side first")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=None, help="sequence length (default 128, quick 32)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU-time clock; more: wall clock)")
    p.add_argument("--methods", default=None, help="comma-separated names to time (default all), e.g. 'OFT (Neumann)'")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 20)
    args.seq = args.seq or (32 if args.quick else 128)
    torch.set_num_threads(args.threads)
    clock, clock_name = (time.process_time, "CPU time") if args.threads == 1 else (time.perf_counter, "wall time")

    import peft
    import transformers

    import deltatune

    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print(
        f"# {now} | {cpu_model()} | nproc={os.cpu_count()} threads={torch.get_num_threads()} | "
        f"torch {torch.__version__}"
        f" transformers {transformers.__version__} peft {peft.__version__} deltatune {deltatune.__version__}"
    )
    base = tiny_llama(args.quick)
    sizes = QUICK if args.quick else FULL
    print(
        f"# tiny Llama {sizes} | batch {args.batch} x seq {args.seq} | fp32 | targets {TARGETS} | "
        f"{args.warmup} warm-up + {args.repeats} timed steps per side, interleaved, {clock_name}"
    )
    block = 8 if args.quick else 32
    print(f"{'method':<22}{'deltatune':>12}{'PEFT':>12}{'ratio':>9}{'paired':>9}  target <= 1.00")
    chosen = methods(block)
    if args.methods:
        wanted = [m.strip() for m in args.methods.split(",")]
        unknown = [m for m in wanted if m not in chosen]
        if unknown:
            p.error(f"unknown method(s) {unknown}; choose from {list(chosen)}")
        chosen = {m: chosen[m] for m in wanted}
    for name, factories in chosen.items():
        trainers = build(name, factories, base, args)
        times: dict[str, list[float]] = {side: [] for side in trainers}
        for _ in range(args.warmup):
            for trainer in trainers.values():
                trainer.step(clock)
        for i in range(args.repeats):
            order = list(trainers.items()) if i % 2 == 0 else list(reversed(trainers.items()))
            for side, trainer in order:
                times[side].append(trainer.step(clock))
        ours, theirs = statistics.median(times["deltatune"]), statistics.median(times["peft"])
        ratio = ours / theirs
        paired = statistics.median(a / b for a, b in zip(times["deltatune"], times["peft"], strict=True))
        met = "ok" if ratio <= 1.0 else "MISSED"
        print(f"{name:<22}{ours * 1e3:>10.1f}ms{theirs * 1e3:>10.1f}ms{ratio:>9.3f}{paired:>9.3f}  {met}")
        del trainers
        gc.collect()


if __name__ == "__main__":
    main()
