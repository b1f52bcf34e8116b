"""LoRA training step: deltatune vs HF PEFT vs the frozen-model floor.

One step = forward (labels = input_ids) + backward + AdamW step over the trainable parameters.
LoRA r=16, alpha=32, dropout 0, all-linear, on a tiny Llama (hidden 512, ffn 1376, 4 layers,
8 heads, vocab 8000; --vocab 32000 for Llama's), batch 4 x seq 256, fp32.

The floor is the same model without any adapter, all parameters frozen, back-propagating to its
inputs (``inputs_embeds`` with ``requires_grad=True``): the least work any adapter method can do.

Targets: deltatune <= 0.95x PEFT, deltatune <= 1.10x floor.
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


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse(parser(__doc__.splitlines()[0]), argv)
    quick = args.quick
    repeats = args.repeats or (2 if quick else 5)
    batch, seq = (2, 32) if quick else (4, 256)
    overrides = llama_overrides(args)

    import peft

    import deltatune as dt

    if not args.no_env:
        print_environment()
    torch.manual_seed(0)

    def lora_kwargs():
        return dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear")

    # deltatune
    dt_model = dt.wrap(tiny_llama(quick, **overrides), dt.LoraConfig(**lora_kwargs()))
    dt_model.train()
    dt_opt = torch.optim.AdamW([q for q in dt_model.parameters() if q.requires_grad], lr=1e-4)
    # PEFT
    pf_model = peft.get_peft_model(tiny_llama(quick, **overrides), peft.LoraConfig(**lora_kwargs()))
    pf_model.train()
    pf_opt = torch.optim.AdamW([q for q in pf_model.parameters() if q.requires_grad], lr=1e-4)
    # floor: frozen base, gradients only to the input embeddings
    floor = tiny_llama(quick, **overrides)
    floor.train()
    floor.requires_grad_(False)

    cfg = floor.config
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    embeds = floor.get_input_embeddings()(ids).detach().requires_grad_(True)
    n_dt = sum(q.numel() for q in dt_model.parameters() if q.requires_grad)
    n_pf = sum(q.numel() for q in pf_model.parameters() if q.requires_grad)
    print(f"train_step: {describe_llama(cfg)}, batch {batch} x seq {seq}, fp32, LoRA r=16 all-linear")
    print(f"  trainable params: deltatune {n_dt:,d}, PEFT {n_pf:,d}")
    assert n_dt == n_pf, "deltatune and PEFT adapt different parameters"

    def step(model, opt):
        def run():
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return run

    def floor_step():
        loss = floor(inputs_embeds=embeds, labels=ids).loss
        loss.backward()
        embeds.grad = None

    times = interleaved(
        {"deltatune": step(dt_model, dt_opt), "peft": step(pf_model, pf_opt), "floor": floor_step},
        repeats=repeats,
        warmup=1,
    )
    print_times(times)
    note = f"{describe_llama(cfg)}, b{batch}x{seq}"
    rows = [
        Row.compare("train_step", "deltatune / PEFT", times, "deltatune", "peft", 0.95, note),
        Row.compare("train_step", "deltatune / floor (frozen, grad to x)", times, "deltatune", "floor", 1.10, note),
        Row.compare("train_step", "(info) PEFT / floor", times, "peft", "floor", None, note),
    ]
    finish(args, rows)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
