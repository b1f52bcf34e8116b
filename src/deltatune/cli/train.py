"""``deltatune train RECIPE [key=value ...]``: train an adapter from a recipe (help lists every key)."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any


def recipe_keys_help() -> str:
    """Every recipe key with its type, default and help, from the config dataclasses."""
    from deltatune.training.config import Recipe, field_help

    lines = ["recipe keys (override any of them as key=value):"]
    section = None
    for key, tp, default, help_text in field_help(Recipe):
        top = key.split(".")[0] if "." in key else ""
        if top != section:
            section = top
            lines.append(f"\n  {top or 'top level'}:")
        shown = "[...]" if isinstance(default, (list, dict)) and len(repr(default)) > 30 else repr(default)
        lines.append(f"    {key}  ({tp}, default {shown})")
        lines += textwrap.wrap(help_text, width=88, initial_indent="        ", subsequent_indent="        ")
    lines.append(
        "\n  adapter.options.<field>: any field of the method's config class, e.g. adapter.options.r=16 for LORA."
    )
    return "\n".join(lines)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train an adapter from a recipe",
        description="Train an adapter from a recipe YAML (or a shipped recipe by name). Running the same "
        "command again resumes from the last checkpoint.",
        epilog=recipe_keys_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipe", help="recipe file, or the name of a shipped recipe (see `deltatune recipes`)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe settings, e.g. train.lr=2e-4")
    p.add_argument("--overwrite", action="store_true", help="delete what output.dir holds and start over")
    p.add_argument(
        "--resume", action="store_true", help="go on from output.dir's last checkpoint even if settings changed"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from deltatune.training.errors import RecipeError
    from deltatune.training.recipe import load_recipe
    from deltatune.training.runner import run_recipe

    if args.overwrite and args.resume:
        raise RecipeError("--overwrite and --resume contradict each other; pass one of them.")
    recipe = load_recipe(args.recipe, args.overrides)
    run_recipe(recipe, overwrite=args.overwrite, resume=args.resume)
    return 0
