"""``deltatune recipes``: list the shipped recipes."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("recipes", help="list the shipped recipes", description="List the shipped recipes.")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from deltatune.training.recipe import shipped_recipes

    found = shipped_recipes()
    if not found:
        print("No recipes found (they live in the recipes/ folder of a deltatune checkout).")
        return 0
    width = max(len(n) for n in found)
    for name, path in found.items():
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        description = data.get("description", "") if isinstance(data, dict) else ""
        print(f"{name:{width}s}  {description}")
        print(f"{'':{width}s}  deltatune train {path}")
    return 0
