"""Prefix-tuned ``generate``: deltatune vs the plain model vs HF PEFT's prefix tuning, side by side.

Greedy generation of 64 new tokens on a tiny Llama (hidden 512, 4 layers, 8 heads, vocab 8000),
batch 4, prompt 32 tokens, 20 virtual tokens, fp32. The cases run interleaved (A B C ...) and
medians are reported, with the median per-round ratios.

Caveat: with transformers 5.x, PEFT 0.21.2's prefix-tuned ``generate`` drops its prefix (it
passes the prefix cache under the old ``past_key_values`` name, which generate's own ``cache``
overrides), so it generates exactly what the plain model does; the run checks this and prints it.
Its "PEFT prefix generate" time is therefore a plain-model time, not a prefix-tuning time. The
only way PEFT 0.21.2 generates *with* its prefix here is a greedy loop over its forward, with no
KV cache (each step runs the whole sequence again); that loop is timed too ("PEFT prefix forward
loop"), and so is the same loop on deltatune's forward, for a like-for-like comparison of the two
forwards. Both adapters hold the same prefix (PEFT's checkpoint loaded in deltatune), and the
run checks that deltatune's generate gives the tokens of PEFT's forward loop.

    .venv/bin/python benchmarks/bench_prompt_generate.py [--quick] [--repeats N] [--threads T]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
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
    theirs = peft.get_peft_model(
        copy.deepcopy(base), peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20)
    ).eval()
    with tempfile.TemporaryDirectory() as folder:  # the same prefix on both sides
        theirs.save_pretrained(folder)
        ours = dt.DeltaModel.from_pretrained(copy.deepcopy(base), folder).eval()
    kwargs = dict(max_new_tokens=new_tokens, do_sample=False, min_new_tokens=new_tokens)

    def generate(model: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        assert out.shape == (4, 32 + new_tokens), out.shape
        return out

    def forward_loop(model: torch.nn.Module) -> torch.Tensor:
        """Greedy decoding by a full forward per new token (no KV cache)."""
        seq, seq_mask = ids, mask
        with torch.no_grad():
            for _ in range(new_tokens):
                logits = model(input_ids=seq, attention_mask=seq_mask).logits
                seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], 1)
                seq_mask = torch.cat([seq_mask, torch.ones_like(seq_mask[:, :1])], 1)
        return seq

    plain_tokens, peft_tokens = generate(base), generate(theirs)
    ours_tokens, peft_loop_tokens = generate(ours), forward_loop(theirs)
    peft_is_plain = torch.equal(peft_tokens, plain_tokens)
    same_as_peft_loop = torch.equal(ours_tokens, peft_loop_tokens)
    print(f"  PEFT prefix generate gives the plain model's tokens (prefix dropped): {peft_is_plain}")
    print(f"  deltatune prefix generate gives the tokens of PEFT's prefix forward loop: {same_as_peft_loop}")

    times = common.interleaved(
        {
            "deltatune prefix generate": lambda: generate(ours),
            "plain model generate": lambda: generate(base),
            "PEFT prefix generate (= plain)": lambda: generate(theirs),
            "PEFT prefix forward loop": lambda: forward_loop(theirs),
            "deltatune prefix forward loop": lambda: forward_loop(ours),
        },
        repeats=repeats,
    )
    common.print_times(times)
    setting = f"greedy, {new_tokens} new tokens, batch 4, prompt 32, 20 virtual tokens"
    dropped = (
        "PEFT 0.21.2 + transformers 5.x: its prefix generate drops the prefix "
        f"(tokens == plain model: {peft_is_plain}), so this is a plain-model time"
    )
    rows = [
        common.Row.compare(
            "prompt_gen",
            "prefix generate: deltatune / plain",
            times,
            "deltatune prefix generate",
            "plain model generate",
            None,
            setting,
        ),
        common.Row.compare(
            "prompt_gen",
            "deltatune gen / PEFT gen (=plain!)",
            times,
            "deltatune prefix generate",
            "PEFT prefix generate (= plain)",
            None,
            dropped,
        ),
        common.Row.compare(
            "prompt_gen",
            "deltatune gen / PEFT fwd loop",
            times,
            "deltatune prefix generate",
            "PEFT prefix forward loop",
            1.0,
            f"PEFT's only prefix generation that keeps the prefix (no KV cache); same tokens: {same_as_peft_loop}",
        ),
        common.Row.compare(
            "prompt_gen",
            "fwd loop: deltatune / PEFT",
            times,
            "deltatune prefix forward loop",
            "PEFT prefix forward loop",
            None,
            "the same no-cache greedy loop on both forwards (the same work: ~1.0 expected)",
        ),
    ]
    print(common.table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([asdict(r) for r in rows], f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
