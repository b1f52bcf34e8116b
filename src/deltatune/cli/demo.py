"""``deltatune demo``: the relevance recipe on the packaged MiniLM, baseline beside it, reload check."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    from deltatune import demo

    p = sub.add_parser(
        "demo",
        help="fine-tune the packaged MiniLM with LoRA on the bundled relevance data",
        description=demo.DESCRIPTION,
    )
    demo.add_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from deltatune import demo

    return demo.run(args)
