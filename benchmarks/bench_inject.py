"""Injection time: LoRA r=16 all-linear into a 7B Llama built on the meta device.

The base is ``LlamaForCausalLM(LlamaConfig())`` (hidden 4096, 32 layers, ffn 11008: 224 target
Linear layers) created under ``torch.device("meta")``, fresh for every timed call and not timed.
Timed: ``dt.wrap(model, cfg)`` vs ``peft.get_peft_model(model, cfg)`` (PEFT's default), plus PEFT
with ``low_cpu_mem_usage=True`` for information.

Target: deltatune <= 0.5x PEFT (default).
"""

from __future__ import annotations

import sys

import torch
from _common import Row, finish, interleaved, parse, parser, print_environment, print_times


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse(parser(__doc__.splitlines()[0]), argv)
    quick = args.quick
    repeats = args.repeats or (2 if quick else 5)

    import peft
    from transformers import LlamaConfig, LlamaForCausalLM

    import deltatune as dt

    if not args.no_env:
        print_environment()
    cfg = LlamaConfig(num_hidden_layers=4) if quick else LlamaConfig()

    def meta_model():
        with torch.device("meta"):
            return LlamaForCausalLM(cfg)

    kwargs = dict(r=16, lora_alpha=32, target_modules="all-linear")
    kept = []  # keep results alive until the next call so freeing memory is not timed

    def run_dt(model):
        kept[:] = [dt.wrap(model, dt.LoraConfig(**kwargs))]

    def run_peft(model):
        kept[:] = [peft.get_peft_model(model, peft.LoraConfig(**kwargs))]

    def run_peft_lcmu(model):
        kept[:] = [peft.get_peft_model(model, peft.LoraConfig(**kwargs), low_cpu_mem_usage=True)]

    print(
        f"inject: Llama h={cfg.hidden_size} L={cfg.num_hidden_layers} ffn={cfg.intermediate_size} on meta, "
        f"{7 * cfg.num_hidden_layers} target Linear layers, LoRA r=16 all-linear"
    )
    cases = {"deltatune": run_dt, "peft": run_peft, "peft low_cpu_mem_usage": run_peft_lcmu}
    times = interleaved(cases, repeats=repeats, warmup=1, setup={n: meta_model for n in cases})
    kept.clear()
    print_times(times)
    note = f"Llama h={cfg.hidden_size} L={cfg.num_hidden_layers} on meta ({7 * cfg.num_hidden_layers} targets)"
    lcmu = "peft low_cpu_mem_usage"
    rows = [
        Row.compare("inject", "deltatune / PEFT", times, "deltatune", "peft", 0.5, note),
        Row.compare("inject", "deltatune / PEFT(low_cpu_mem_usage)", times, "deltatune", lcmu, None, note),
    ]
    finish(args, rows)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
