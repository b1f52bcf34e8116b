"""``deltatune recipes``: list the shipped recipes (``--tasks``: the tasks a recipe can name, with options)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("recipes", help="list the shipped recipes", description="List the shipped recipes.")
    p.add_argument("--tasks", action="store_true", help="list the tasks a recipe can use and their task_options")
    p.set_defaults(run=run)


def print_tasks() -> None:
    import dataclasses
    import typing

    from deltatune.training.config import type_name
    from deltatune.training.tasks import task_kinds

    for name, kind in sorted(task_kinds().items()):
        print(f"{name}: {kind.summary}")
        hints = typing.get_type_hints(kind.options_cls)
        for f in dataclasses.fields(kind.options_cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            print(f"    task_options.{f.name}  ({type_name(hints[f.name])}, default {default!r})")
            print(f"        {f.metadata.get('help', '')}")


def run(args: argparse.Namespace) -> int:
    import yaml

    from deltatune.training.recipe import shipped_recipes

    if args.tasks:
        print_tasks()
        return 0
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
