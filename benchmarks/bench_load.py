"""Loading a PEFT-format adapter into a fresh model: deltatune vs PEFT.

The adapter (LoRA r=16, alpha=32, all-linear on the tiny Llama: hidden 512, ffn 1376, 4 layers,
vocab 8000; --vocab 32000 for Llama's) is saved once by PEFT's ``save_pretrained``. Every timed
call gets a freshly built base model (construction not timed) and measures injection + reading +
copying the weights:
``dt.DeltaModel.from_pretrained(base, folder)`` vs ``peft.PeftModel.from_pretrained(base, folder)``.

Target: deltatune <= PEFT.
"""

from __future__ import annotations

import copy
import sys
import tempfile

import torch
from _common import (
    Row,
    describe_llama,
    finish,
    interleaved,
    llama_overrides,
    parse,
    parser,
    print_environment,
    print_times,
    tiny_llama,
)


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse(parser(__doc__.splitlines()[0]), argv)
    quick = args.quick
    repeats = args.repeats or (2 if quick else 9)
    overrides = llama_overrides(args)

    import peft

    import deltatune as dt

    if not args.no_env:
        print_environment()
    with tempfile.TemporaryDirectory() as folder:
        saver = peft.get_peft_model(
            tiny_llama(quick, **overrides),
            peft.LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False),
        )
        saver.save_pretrained(folder)
        cfg = saver.config
        del saver

        kept = []

        def run_dt(base):
            kept[:] = [dt.DeltaModel.from_pretrained(base, folder)]

        def run_peft(base):
            kept[:] = [peft.PeftModel.from_pretrained(base, folder)]

        print(f"load: PEFT-saved LoRA r=16 all-linear on {describe_llama(cfg)}, fresh base per call (not timed)")
        cases = {"deltatune": run_dt, "peft": run_peft}
        template = tiny_llama(quick, **overrides)

        def fresh_base():
            return copy.deepcopy(template)  # faster than initialising a new model; not timed

        times = interleaved(cases, repeats=repeats, warmup=1, setup={n: fresh_base for n in cases})
        kept.clear()
        # sanity: both load the same weights
        loaded = dt.DeltaModel.from_pretrained(fresh_base(), folder)
        ids = torch.randint(0, cfg.vocab_size, (1, 8))
        ref = peft.PeftModel.from_pretrained(fresh_base(), folder)
        with torch.no_grad():
            diff = (loaded(input_ids=ids).logits - ref(input_ids=ids).logits).abs().max().item()
        assert diff < 1e-4, f"deltatune and PEFT disagree after loading ({diff})"

    print_times(times)
    note = describe_llama(cfg)
    rows = [Row.compare("load", "deltatune / PEFT (from_pretrained)", times, "deltatune", "peft", 1.0, note)]
    finish(args, rows)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
