"""DoRA training step: deltatune DoRA vs HF PEFT DoRA vs deltatune plain LoRA.

One step = forward (labels = input_ids) + backward + AdamW step over the trainable parameters.
DoRA r=16, alpha=32, dropout 0, on a tiny Llama (hidden 512, ffn 1376, 4 layers, 8 heads,
vocab 8000), batch 4 x seq 256 (``--seq`` to change), fp32, one torch thread by default.
deltatune and PEFT run interleaved (A B C A B C ...), medians of the per-round ratios are reported, on
this process's CPU time (the steadier clock on a shared machine with one thread) and on wall time.

Targets: deltatune DoRA <= 0.8x PEFT DoRA, and <= 1.3x deltatune plain LoRA.

    .venv/bin/python benchmarks/bench_step_dora.py            # full run
    .venv/bin/python benchmarks/bench_step_dora.py --quick    # smoke run, tiny sizes
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable

import torch

warnings.filterwarnings("ignore")

LLAMA = dict(
    hidden_size=512,
    intermediate_size=1376,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=8,
    vocab_size=8000,
    max_position_embeddings=1024,
)
QUICK = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    vocab_size=256,
    max_position_embeddings=128,
)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def llama(quick: bool) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(**(QUICK if quick else LLAMA), attn_implementation="sdpa", tie_word_embeddings=False)
    return LlamaForCausalLM(cfg)


def step_fn(model: torch.nn.Module, ids: torch.Tensor, device: str) -> Callable[[], None]:
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def run() -> None:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()

    return run


def interleaved(cases: dict[str, Callable[[], None]], repeats: int, warmup: int) -> dict[str, dict[str, list[float]]]:
    """{case: {"cpu": [...], "wall": [...]}}: both clocks per step. This process's CPU time is the
    steadier one on a shared machine (other processes' load barely moves it with one thread)."""
    names = list(cases)
    times: dict[str, dict[str, list[float]]] = {n: {"cpu": [], "wall": []} for n in names}
    for _ in range(warmup):
        for name in names:
            cases[name]()
    for i in range(repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            cases[name]()
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    return times


def ratio(times: dict[str, dict[str, list[float]]], ours: str, ref: str, clock: str = "cpu") -> float:
    return statistics.median(a / b for a, b in zip(times[ours][clock], times[ref][clock], strict=True))


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, few repeats: a smoke run")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--targets", default="all-linear", help='"all-linear" or a comma list, e.g. q_proj,v_proj')
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    import peft
    import transformers

    import deltatune as dt

    quick = args.quick
    repeats = args.repeats or (2 if quick else 7)
    batch, seq = (2, 32) if quick else (args.batch, args.seq)
    targets = args.targets if args.targets == "all-linear" else args.targets.split(",")
    print(
        f"# {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} | {cpu_name()} | device={args.device} "
        f"threads={torch.get_num_threads()} | torch {torch.__version__} transformers {transformers.__version__} "
        f"peft {peft.__version__} deltatune {dt.__version__}"
    )

    def kwargs() -> dict:
        return dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets)

    dev = args.device
    ours = dt.wrap(llama(quick).to(dev), dt.LoraConfig(use_dora=True, **kwargs()))
    theirs = peft.get_peft_model(llama(quick).to(dev), peft.LoraConfig(use_dora=True, **kwargs()))
    plain = dt.wrap(llama(quick).to(dev), dt.LoraConfig(**kwargs()))
    n_ours = sum(q.numel() for q in ours.parameters() if q.requires_grad)
    n_theirs = sum(q.numel() for q in theirs.parameters() if q.requires_grad)
    assert n_ours == n_theirs, f"deltatune and PEFT train different parameters: {n_ours} vs {n_theirs}"
    cfg = ours.model.config
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device=dev)
    print(
        f"train step: Llama h={cfg.hidden_size} ffn={cfg.intermediate_size} L={cfg.num_hidden_layers} "
        f"vocab={cfg.vocab_size}, batch {batch} x seq {seq}, fp32, r=16 targets={args.targets}; "
        f"trainable params {n_ours:,d}"
    )
    cases = {
        "deltatune DoRA": step_fn(ours, ids, dev),
        "PEFT DoRA": step_fn(theirs, ids, dev),
        "deltatune LoRA": step_fn(plain, ids, dev),
    }
    times = interleaved(cases, repeats, warmup=1)
    for name, clocks in times.items():
        cpu, wall = clocks["cpu"], clocks["wall"]
        print(
            f"  {name:<16} CPU median {statistics.median(cpu) * 1e3:8.1f} ms (min {min(cpu) * 1e3:.1f})  "
            f"wall median {statistics.median(wall) * 1e3:8.1f} ms (min {min(wall) * 1e3:.1f}), n={repeats}"
        )
    vs_peft = ratio(times, "deltatune DoRA", "PEFT DoRA")
    vs_lora = ratio(times, "deltatune DoRA", "deltatune LoRA")
    for label, value, target in (("PEFT DoRA", vs_peft, 0.8), ("deltatune LoRA", vs_lora, 1.3)):
        verdict = "met" if value <= target else "NOT met"
        wall = ratio(times, "deltatune DoRA", label, "wall")
        print(
            f"  deltatune DoRA / {label:<15} = {value:.2f}x CPU time, {wall:.2f}x wall  "
            f"(target <= {target:.2f}: {verdict})"
        )
    return {"vs_peft": vs_peft, "vs_lora": vs_lora}


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
