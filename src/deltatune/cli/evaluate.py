"""``deltatune eval TARGET``: the task's metrics of a trained adapter on a split or a file."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    from deltatune.cli.runs import add_target_arguments

    p = sub.add_parser(
        "eval",
        help="score a trained adapter with its task's metrics",
        description="Evaluate a trained adapter (a run folder, or a recipe with --adapter) on the test or valid "
        "split of the recipe's data, or on --file. Prints the metrics; --base also scores the model without "
        "the adapter.",
    )
    add_target_arguments(p)
    p.add_argument("--split", choices=("test", "valid", "train"), default="test", help="which split (default test)")
    p.add_argument("--file", help="rows to evaluate (.jsonl or .csv) instead of a split")
    p.add_argument(
        "--limit", type=int, help="use only the first N rows (0 = all; default: the recipe's data.limit_eval)"
    )
    p.add_argument("--base", action="store_true", help="also evaluate the base model with the adapter disabled")
    p.add_argument("--json", dest="json_out", metavar="FILE", help="also write the metrics to FILE (atomically)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from deltatune.cli.runs import open_target
    from deltatune.files import atomic_write_bytes
    from deltatune.training.data import load_split

    opened = open_target(args.target, args.adapter, args.overrides)
    recipe, setup = opened.recipe, opened.setup
    split_file = args.file or getattr(recipe.data, f"{args.split}_file")
    limit = args.limit if args.limit is not None else (0 if args.file else recipe.data.limit_eval)
    rows = load_split(args.split, split_file, recipe.data.dataset, setup.required_fields, setup.label_field, limit)
    batch_size = args.batch_size or recipe.eval.batch_size
    results: dict[str, Any] = {"adapter": str(opened.adapter_dir), "rows": len(rows)}
    with torch.no_grad():
        results["adapted"] = setup.task.evaluate(opened.model, rows, batch_size)
        if args.base:
            with opened.model.disable_adapters():  # type: ignore[operator]
                results["base"] = setup.task.evaluate(opened.model, rows, batch_size)
    where = args.file or f"{args.split} split"
    print(f"{recipe.name}: {where}, {len(rows)} rows")
    names = ["loss", *setup.task.metrics]
    print("  " + " " * 8 + "".join(f" {m:>11s}" for m in names))
    for side in ("base", "adapted"):
        if side in results:
            print(f"  {side:8s}" + "".join(f" {results[side].get(m, float('nan')):11.4f}" for m in names))
    if args.json_out:
        atomic_write_bytes(args.json_out, (json.dumps(results, indent=2) + "\n").encode())
    return 0
