"""Training step of LN tuning, trainable tokens, bias tuning (BEFT) and bottleneck adapters: deltatune vs PEFT.

One step = forward (labels = input_ids) + backward + AdamW step over the trainable parameters, on a
tiny Llama (hidden 512, ffn 1376, 4 layers, 8 heads, vocab 8000), batch 4 x seq 128, fp32.

- LN tuning: the default targets (input_layernorm, post_attention_layernorm, norm).
- Trainable tokens: 64 token rows of embed_tokens; again with the LM head tied to the embedding.
- BEFT: bias deltas on q_proj, v_proj, down_proj (bias-free layers, as in Llama).
- Bottleneck adapters have no PEFT counterpart: timed against PEFT LoRA r=16 on the same
  modules (o_proj, down_proj; for information) and against the frozen model (the floor).

Target: deltatune <= 1.00x PEFT for the methods both libraries have.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from _common import Row, finish, interleaved, parse, parser, print_environment, print_times

TOKENS = list(range(100, 164))


def llama(quick: bool, tied: bool = False, seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    sizes = (
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=256)
        if quick
        else dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8, vocab_size=8000)
    )
    cfg = LlamaConfig(**sizes, max_position_embeddings=256, attn_implementation="sdpa", tie_word_embeddings=tied)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse(parser(__doc__.splitlines()[0]), argv)
    quick = args.quick
    repeats = args.repeats or (2 if quick else 5)
    batch, seq = (2, 32) if quick else (4, 128)

    import peft

    import deltatune as dt

    if not args.no_env:
        print_environment()

    pairs: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any], dict[str, Any], bool]] = {
        # name: (deltatune config, PEFT config, kwargs, tied)
        "ln_tuning": (dt.LNTuningConfig, peft.LNTuningConfig, {}, False),
        "tokens": (dt.TrainableTokensConfig, peft.TrainableTokensConfig, dict(token_indices=TOKENS), False),
        "tokens_tied": (dt.TrainableTokensConfig, peft.TrainableTokensConfig, dict(token_indices=TOKENS), True),
        "beft": (dt.BeftConfig, peft.BeftConfig, dict(target_modules=["q_proj", "v_proj", "down_proj"]), False),
    }
    models: dict[str, torch.nn.Module] = {}
    for name, (ours, theirs, kwargs, tied) in pairs.items():
        models[f"{name}/deltatune"] = dt.wrap(llama(quick, tied), ours(**kwargs))
        models[f"{name}/peft"] = peft.get_peft_model(llama(quick, tied), theirs(**kwargs))
    models["bottleneck/deltatune"] = dt.wrap(llama(quick), dt.BottleneckConfig(style="houlsby", reduction_factor=16))
    lora = peft.LoraConfig(r=16, lora_alpha=32, target_modules=["o_proj", "down_proj"])
    models["bottleneck/peft-lora"] = peft.get_peft_model(llama(quick), lora)
    floor = llama(quick)
    floor.requires_grad_(False)

    vocab = floor.config.vocab_size
    ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(0))
    ids[:, ::4] = torch.tensor(TOKENS[: (seq + 3) // 4]) % vocab  # trained tokens appear in the batch
    embeds = floor.get_input_embeddings()(ids).detach().requires_grad_(True)

    cases: dict[str, Callable[[], None]] = {}
    for key, model in models.items():
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        if key.endswith("/peft") or key.endswith("/deltatune"):
            print(f"  {key:<24} trainable params {sum(p.numel() for p in params):,d}")
        cases[key] = _step(model, torch.optim.AdamW(params, lr=1e-4), ids)

    def floor_step() -> None:
        floor(inputs_embeds=embeds, labels=ids).loss.backward()
        embeds.grad = None

    cases["floor"] = floor_step
    print(
        f"train_step: Llama h={floor.config.hidden_size} L={floor.config.num_hidden_layers} vocab={vocab}, "
        f"batch {batch} x seq {seq}, fp32"
    )
    times = interleaved(cases, repeats=repeats, warmup=1)
    print_times(times)
    note = f"b{batch}x{seq}"
    rows = [
        Row.compare("step_" + name, "deltatune / PEFT", times, f"{name}/deltatune", f"{name}/peft", 1.0, note)
        for name in pairs
    ]
    rows.append(
        Row.compare(
            "step_bneck",
            "bottleneck / PEFT LoRA r16 (same mods)",
            times,
            "bottleneck/deltatune",
            "bottleneck/peft-lora",
            None,
            note,
        )
    )
    rows.append(
        Row.compare("step_bneck", "bottleneck / floor (frozen)", times, "bottleneck/deltatune", "floor", None, note)
    )
    finish(args, rows)
    return rows


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run


if __name__ == "__main__":
    main(sys.argv[1:])
