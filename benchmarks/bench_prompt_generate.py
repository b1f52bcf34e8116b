"""Prefix-tuned ``generate``: deltatune vs the plain model vs HF PEFT's prefix tuning, side by side.

Greedy generation of 64 new tokens on a tiny Llama (hidden 512, 4 layers, 8 heads, vocab 8000),
batch 4, prompt 32 tokens, 20 virtual tokens, fp32. The three run interleaved (A B C ...) and
medians are reported, with the median per-round ratios deltatune / plain and deltatune / PEFT
(target <= 1.0 against PEFT).

    .venv/bin/python benchmarks/bench_prompt_generate.py [--quick] [--repeats N] [--threads T]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from dataclasses import asdict

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _common as common  # noqa: E402

SIZES = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8, vocab_size=8000)
QUICK = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=256)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: toy sizes, few repeats")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    p.add_argument("--clock", choices=["auto", "cpu", "wall"], default="auto")
    p.add_argument("--json", default=None, help="write the result rows here (for run_all.py)")
    p.add_argument("--no-env", action="store_true", help="do not print the environment header")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    common._clock_name = args.clock if args.clock != "auto" else ("cpu" if torch.get_num_threads() == 1 else "wall")
    if not args.no_env:
        common.print_environment()

    import peft
    from transformers import LlamaConfig, LlamaForCausalLM

    import deltatune as dt

    sizes = QUICK if args.quick else SIZES
    new_tokens, repeats = (8, args.repeats or 3) if args.quick else (64, args.repeats or 5)
    torch.manual_seed(0)
    cfg = LlamaConfig(**sizes, num_key_value_heads=sizes["num_attention_heads"], max_position_embeddings=256)
    cfg._attn_implementation = "sdpa"
    base = LlamaForCausalLM(cfg).eval()
    base.generation_config.eos_token_id = None  # always 64 new tokens
    base.generation_config.pad_token_id = 0
    ids = torch.randint(3, sizes["vocab_size"], (4, 32), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    ours = dt.wrap(copy.deepcopy(base), dt.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20)).eval()
    theirs = peft.get_peft_model(
        copy.deepcopy(base), peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20)
    ).eval()
    kwargs = dict(max_new_tokens=new_tokens, do_sample=False, min_new_tokens=new_tokens)

    def run(model: torch.nn.Module) -> None:
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        assert out.shape == (4, 32 + new_tokens), out.shape

    times = common.interleaved(
        {"deltatune prefix": lambda: run(ours), "plain model": lambda: run(base), "PEFT prefix": lambda: run(theirs)},
        repeats=repeats,
    )
    common.print_times(times)
    note = (
        "greedy generate of 64 tokens, batch 4, prompt 32, 20 virtual tokens; with transformers 5.x PEFT 0.21's "
        "prefix generate passes its prefix under the old past_key_values name, which the model ignores "
        "(it generates as the plain model), so PEFT's time is a plain-model time"
    )
    rows = [
        common.Row.compare(
            "prompt_gen", "prefix generate: deltatune / plain", times, "deltatune prefix", "plain model", None, note
        ),
        common.Row.compare(
            "prompt_gen", "prefix generate: deltatune / PEFT", times, "deltatune prefix", "PEFT prefix", 1.0, note
        ),
    ]
    print(common.table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([asdict(r) for r in rows], f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
