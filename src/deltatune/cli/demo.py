"""``deltatune demo``: the relevance demo (LoRA on the packaged MiniLM, baseline beside it)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="fine-tune the packaged MiniLM with LoRA on the bundled relevance data",
        description="Run deltatune's demo (python -m deltatune.demo): LoRA on the packaged MiniLM next to a "
        "frozen-encoder baseline. Other arguments go to the demo, e.g. `deltatune demo --quick`; its options: "
        "`python -m deltatune.demo --help`.",
    )
    p.set_defaults(run=run, passes_extra_args=True)


def run(args: argparse.Namespace) -> int:
    from deltatune import demo

    extra = [a for a in args.extra if a != "--"]
    return int(demo.main(extra) or 0)
