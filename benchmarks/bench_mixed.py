"""Mixed-adapter batch: 16 sequences over 8 LoRA adapters, eval forward, no_grad, at two lengths.

Lengths (``--seq``, default "128,16"): 128 tokens (a prefill of short prompts) and 16 tokens
(a few tokens per request, as in serving many adapters). Each length is timed and reported on its own.

The tiny Llama (hidden 512, ffn 1376, 4 layers, 8 heads, vocab 8000; --vocab 32000 for
Llama's) carries 8 LoRA adapters (r=16, alpha=32, on q/k/v/o/gate/up/down, random non-zero A
and B). Samples are assigned round-robin: ``adapter_names = [a0, a1, ..., a7, a0, ..., a7]``.

Timed (interleaved):
- deltatune ``model(input_ids=..., adapter_names=names)``
- PEFT ``model(input_ids=..., adapter_names=names)``, same adapters and names
- deltatune with one active adapter on the same batch, no ``adapter_names`` (the floor for routing)
- the model with adapters disabled (for information: the bound on any ratio against PEFT)

Targets: deltatune <= 0.8x PEFT, deltatune mixed <= 1.15x deltatune single adapter.
"""

from __future__ import annotations

import sys

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

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main(argv: list[str] | None = None) -> list[Row]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seq", default="128,16", help="comma-separated sequence lengths, each timed on its own")
    args = parse(p, argv)
    quick = args.quick
    repeats = args.repeats or (2 if quick else 7)
    n_adapters = 8
    overrides = llama_overrides(args)
    batch = 16
    lengths = [16] if quick else [int(v) for v in args.seq.split(",")]

    import peft

    import deltatune as dt

    if not args.no_env:
        print_environment()
    names = [f"a{i}" for i in range(n_adapters)]

    def kwargs():
        return dict(r=16, lora_alpha=32, target_modules=list(TARGETS), init_lora_weights=False)

    torch.manual_seed(1)
    dt_model = dt.wrap(tiny_llama(quick, **overrides), dt.LoraConfig(**kwargs()), adapter_name=names[0])
    for name in names[1:]:
        dt_model.add_adapter(name, dt.LoraConfig(**kwargs()))
    dt_model.set_adapter(names[0])
    dt_model.eval()

    torch.manual_seed(1)
    pf_model = peft.get_peft_model(tiny_llama(quick, **overrides), peft.LoraConfig(**kwargs()), adapter_name=names[0])
    for name in names[1:]:
        pf_model.add_adapter(name, peft.LoraConfig(**kwargs()))
    pf_model.set_adapter(names[0])
    pf_model.eval()

    cfg = dt_model.config
    adapter_names = [names[i % n_adapters] for i in range(batch)]
    rows: list[Row] = []
    for seq in lengths:
        rows += time_length(dt_model, pf_model, cfg, torch.randint(0, cfg.vocab_size, (batch, seq)), adapter_names,
                            repeats)  # fmt: skip
    finish(args, rows)
    return rows


def time_length(dt_model, pf_model, cfg, ids: torch.Tensor, adapter_names: list[str], repeats: int) -> list[Row]:  # noqa: ANN001
    batch, seq = ids.shape
    n_adapters = len(set(adapter_names))
    print(
        f"mixed: {describe_llama(cfg)}, {n_adapters} LoRA adapters r=16 on {len(TARGETS)} modules/layer, "
        f"batch {batch} x seq {seq}, eval, no_grad"
    )

    def run(fn):
        def timed_call():
            with torch.no_grad():
                fn()

        return timed_call

    def no_adapter():
        with dt_model.disable_adapters():
            dt_model(input_ids=ids)

    cases = {
        "deltatune mixed": run(lambda: dt_model(input_ids=ids, adapter_names=adapter_names)),
        "peft mixed": run(lambda: pf_model(input_ids=ids, adapter_names=adapter_names)),
        "deltatune single adapter": run(lambda: dt_model(input_ids=ids)),
        "no adapter (bound)": run(no_adapter),
    }
    times = interleaved(cases, repeats=repeats, warmup=1)
    print_times(times)
    note = f"{describe_llama(cfg)}, {n_adapters} adapters, b{batch}x{seq}"
    mixed = "deltatune mixed"
    return [
        Row.compare("mixed", f"deltatune / PEFT (adapter_names), seq {seq}", times, mixed, "peft mixed", 0.8, note),
        Row.compare(
            "mixed",
            f"deltatune mixed / single adapter, seq {seq}",
            times,
            mixed,
            "deltatune single adapter",
            1.15,
            note,
        ),  # fmt: skip
        # The best any implementation can reach: the model without adapters, over PEFT's mixed batch.
        Row.compare(
            "mixed", f"(info) no adapter / PEFT mixed, seq {seq}", times, "no adapter (bound)", "peft mixed", None, note
        ),  # fmt: skip
    ]


if __name__ == "__main__":
    main(sys.argv[1:])
