"""Adaption prompt (LLaMA-Adapter) training step: deltatune vs HF PEFT, side by side.

One step = forward (labels = input_ids) + backward + AdamW step over the trainable parameters,
on a tiny Llama (hidden 512, ffn 1376, 4 layers, 8 heads, vocab 8000), batch 4 x seq 128, fp32,
adapter_len 10, adapter_layers 4; once with full multi-head attention and once with grouped-query
attention (2 key/value heads). deltatune and PEFT run interleaved (A B A B ...) and medians are
reported, with the median of the per-round ratios deltatune / PEFT (target <= 1.0).

    .venv/bin/python benchmarks/bench_step_adaption.py [--quick] [--repeats N] [--threads T] [--device cuda]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import platform
import statistics
import time
import warnings
from collections.abc import Callable

import torch

warnings.filterwarnings("ignore")

SIZES = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8, vocab_size=8000)
QUICK = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=256)
ADAPTER = dict(adapter_len=10, adapter_layers=4)
QUICK_ADAPTER = dict(adapter_len=10, adapter_layers=2)
CASES = {"MHA": 1, "GQA": 4}  # name: query heads per key/value head


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def llama(quick: bool, group: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    sizes = QUICK if quick else SIZES
    heads = sizes["num_attention_heads"]
    cfg = LlamaConfig(**sizes, num_key_value_heads=heads // group, max_position_embeddings=256)
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg)


def make_step(model: torch.nn.Module, ids: torch.Tensor) -> Callable[[], None]:
    model.to(ids.device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ids.device.type == "cuda":
            torch.cuda.synchronize()

    return step


def interleaved(cases: dict[str, Callable[[], None]], repeats: int, warmup: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for i in range(warmup + repeats):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            gc.collect()
            start = time.perf_counter()
            cases[name]()
            elapsed = time.perf_counter() - start
            if i >= warmup:
                times[name].append(elapsed)
    return times


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, few repeats: a smoke run")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per case (default 9; quick 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: repeatable; 0 = torch's)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 9)
    batch, seq = (2, 16) if args.quick else (4, 128)

    import peft
    import transformers

    import deltatune as dt

    now = datetime.datetime.now().astimezone()
    print(
        f"# {now:%Y-%m-%d %H:%M %Z} | {cpu_model()} | threads={torch.get_num_threads()} | device {device}"
        f"{' ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}"
        f" | torch {torch.__version__} transformers {transformers.__version__} peft {peft.__version__}"
        f" deltatune {dt.__version__}"
    )
    sizes = QUICK if args.quick else SIZES
    adapter = QUICK_ADAPTER if args.quick else ADAPTER
    print(f"# Llama {sizes}, batch {batch} x seq {seq}, fp32, {adapter}; one step = forward + backward + AdamW")
    ratios: dict[str, float] = {}
    print(f"| {'case':<4} | {'deltatune':>10} | {'PEFT':>10} | {'ratio':>6} | target |")
    print("|------|------------|------------|--------|--------|")
    for name, group in CASES.items():
        ours = dt.wrap(llama(args.quick, group), dt.AdaptionPromptConfig(**adapter))
        theirs = peft.get_peft_model(llama(args.quick, group), peft.AdaptionPromptConfig(**adapter))
        n_ours = sum(q.numel() for q in ours.parameters() if q.requires_grad)
        n_theirs = sum(q.numel() for q in theirs.parameters() if q.requires_grad)
        assert n_ours == n_theirs, f"{name}: deltatune trains {n_ours} parameters, PEFT {n_theirs}"
        ids = torch.randint(0, sizes["vocab_size"], (batch, seq), generator=torch.Generator().manual_seed(0)).to(device)
        times = interleaved({"ours": make_step(ours, ids), "peft": make_step(theirs, ids)}, repeats, warmup=1)
        ratio = statistics.median(a / b for a, b in zip(times["ours"], times["peft"], strict=True))
        ratios[name] = ratio
        t_ours, t_peft = statistics.median(times["ours"]), statistics.median(times["peft"])
        met = "yes" if ratio <= 1.0 else "NO"
        print(f"| {name:<4} | {t_ours * 1e3:>7.1f} ms | {t_peft * 1e3:>7.1f} ms | {ratio:>5.2f}x | <=1.00 {met} |")
        del ours, theirs
    return ratios


if __name__ == "__main__":
    main()
