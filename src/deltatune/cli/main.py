"""``deltatune`` entry point: dispatch to the subcommand; user errors exit with code 2."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from deltatune.cli import demo, evaluate, inspect_adapter, merge, predict, recipes, train
from deltatune.errors import DeltatuneError

SUBCOMMANDS = (train, evaluate, predict, merge, inspect_adapter, recipes, demo)
EXIT_USER_ERROR = 2  # as argparse uses for bad arguments


def build_parser() -> argparse.ArgumentParser:
    from deltatune import __version__

    parser = argparse.ArgumentParser(
        prog="deltatune",
        description="Parameter-efficient fine-tuning: train, evaluate, apply, merge, inspect adapters (PEFT format).",
    )
    parser.add_argument("--version", action="version", version=f"deltatune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except DeltatuneError as exc:
        print(f"deltatune {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"deltatune {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
