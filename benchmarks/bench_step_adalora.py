"""Training step of AdaLoRA: deltatune vs HF PEFT, side by side.

One step = forward (labels = input_ids; the orthogonality penalty is part of the loss on both
sides) + backward + AdamW step over the trainable parameters, on a tiny Llama (hidden 512, ffn 1376,
4 layers, 8 heads, vocab 8000), batch 4 x seq 128, fp32, targets q_proj, v_proj, down_proj,
init_r=12, target_r=8, lora_alpha=32. A second pair of cases adds the rank allocator after the
optimizer step (deltatune ``model.on_optimizer_step(step)`` vs PEFT ``update_and_allocate(step)``)
in the budget phase with ``deltaT=1``, where it re-allocates at every step (its most expensive case).
deltatune and PEFT steps are interleaved (A B A B ...) and medians reported.

    .venv/bin/python benchmarks/bench_step_adalora.py [--quick] [--repeats N] [--threads N]

Target: deltatune / PEFT <= 1.0 for both.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from _common import Row, finish, interleaved, parse, parser, print_environment, print_times

TARGETS = ["q_proj", "v_proj", "down_proj"]
SCHEDULE = dict(init_r=12, target_r=8, lora_alpha=32, tinit=0, tfinal=0, deltaT=1, total_step=100_000)


def llama(quick: bool, seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    sizes = (
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=256)
        if quick
        else dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8, vocab_size=8000)
    )
    cfg = LlamaConfig(**sizes, max_position_embeddings=256, attn_implementation="sdpa", tie_word_embeddings=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def _step(
    model: torch.nn.Module, ids: torch.Tensor, allocate: Callable[[int], None] | None = None
) -> Callable[[], None]:
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    step = [0]

    def run() -> None:
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        if allocate is not None:
            allocate(step[0])
            step[0] += 1
        optimizer.zero_grad(set_to_none=True)

    return run


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse(parser(__doc__.splitlines()[0]), argv)
    quick = args.quick
    repeats = args.repeats or (2 if quick else 7)
    batch, seq = (2, 32) if quick else (4, 128)

    import peft

    import deltatune as dt

    if not args.no_env:
        print_environment()

    def configs() -> tuple[Any, Any]:
        # task_type: PEFT adds the orthogonality penalty only in its task-specific model classes.
        common: dict[str, Any] = dict(target_modules=TARGETS, task_type="CAUSAL_LM", **SCHEDULE)
        return dt.AdaLoraConfig(**common), peft.AdaLoraConfig(**common)

    models: dict[str, Any] = {}
    for case in ("step", "alloc"):
        ours, theirs = configs()
        models[f"{case}/deltatune"] = dt.wrap(llama(quick), ours)
        models[f"{case}/peft"] = peft.get_peft_model(llama(quick), theirs)
    n_ours = sum(p.numel() for p in models["step/deltatune"].parameters() if p.requires_grad)
    n_theirs = sum(p.numel() for p in models["step/peft"].parameters() if p.requires_grad)
    assert n_ours == n_theirs, f"deltatune and PEFT train different parameters: {n_ours} vs {n_theirs}"

    cfg = models["step/deltatune"].model.config
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))
    cases = {
        "step/deltatune": _step(models["step/deltatune"], ids),
        "step/peft": _step(models["step/peft"], ids),
        "alloc/deltatune": _step(models["alloc/deltatune"], ids, models["alloc/deltatune"].on_optimizer_step),
        "alloc/peft": _step(models["alloc/peft"], ids, models["alloc/peft"].base_model.update_and_allocate),
    }
    print(
        f"train step: Llama h={cfg.hidden_size} ffn={cfg.intermediate_size} L={cfg.num_hidden_layers} "
        f"vocab={cfg.vocab_size}, batch {batch} x seq {seq}, fp32, AdaLoRA init_r=12 targets={','.join(TARGETS)}; "
        f"trainable params {n_ours:,d}"
    )
    times = interleaved(cases, repeats=repeats, warmup=1)
    print_times(times)
    note = f"b{batch}x{seq}"
    rows = [
        Row.compare("step_adalora", "deltatune / PEFT", times, "step/deltatune", "step/peft", 1.0, note),
        Row.compare("step_adalora", "+ allocator: deltatune / PEFT", times, "alloc/deltatune", "alloc/peft", 1.0, note),
    ]
    finish(args, rows)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
