"""Small datasets bundled with deltatune for demos, recipes and tests, one folder per dataset.

Each folder holds ``train.jsonl``, ``valid.jsonl`` and ``test.jsonl``, generated reproducibly by a
script in the repository's ``scripts/`` folder (``scripts/make_<name>_data.py``).

``relevance``: synthetic e-commerce query/product-title pairs labelled 1 when the title matches the
query's intent and 0 otherwise (half of the negatives are hard, same-category near misses);
3000 train / 500 valid / 500 test rows (``scripts/make_relevance_data.py``).

``compatibility``: synthetic phone/accessory-title pairs labelled 1 when the accessory fits the phone;
``kind`` marks matches, hard negatives (a sibling model: iPhone 14 Pro vs 14, a Lightning cable for a
USB-C iPhone) and easy ones (another brand); 3000 / 500 / 500 rows (``scripts/make_compatibility_data.py``).

``ctr``: synthetic search-ad impressions (query, ad text, the user's past clicks and affinity in the
ad's category, ad position, device) with ``clicked`` drawn from a hidden model of text relevance,
behaviour and position bias; 3000 / 500 / 500 rows (``scripts/make_ctr_data.py``).

``mrc``: synthetic help-center and product passages (shipping, returns, warranty, support, specs)
with questions whose answers are passage spans (``context``, ``question``, ``answer``,
``answer_start``); 1223 train / 183 valid / 239 test questions (``scripts/make_mrc_data.py``).

``summarization``: synthetic product reviews and local news items whose reference summary is
their three key-fact sentences, placed anywhere in the document (``title``, ``document``,
``summary``); half of the key sentences in valid/test are phrased in ways training never shows;
600 train / 100 valid / 150 test documents (``scripts/make_summarization_data.py``).

``sft``: instructions for a causal LM ("Reverse the words: ...", "Sort these numbers: ...",
"Extract the product brand from: ...") with their responses (``prompt``, ``response``, ``kind``),
and ``vocab.txt``, the WordPiece vocabulary a from-scratch model uses;
5000 train / 240 valid / 360 test rows (``scripts/make_sft_data.py``).
"""

from __future__ import annotations

import argparse
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

SPLITS = ("train", "valid", "test")
RELEVANCE_SPLITS = SPLITS


def bundled_datasets() -> list[str]:
    """Names of the bundled datasets (folders holding a train.jsonl)."""
    root = resources.files(__name__)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.joinpath("train.jsonl").is_file())


def load_bundled(name: str, split: str) -> list[dict]:
    """Rows of one split of a bundled dataset, as dicts."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if name not in bundled_datasets():
        raise ValueError(f"unknown bundled dataset {name!r}; deltatune ships {bundled_datasets()}")
    path = resources.files(__name__).joinpath(name, f"{split}.jsonl")
    with path.open("r", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_splits(splits: dict[str, list[dict]], out_dir: str | os.PathLike[str]) -> None:
    """Write ``{split: rows}`` as ``<out_dir>/<split>.jsonl`` (UTF-8, one JSON object per line, ``\\n``
    line ends), the form every bundled dataset has; the generator scripts in ``scripts/`` use it."""
    from deltatune.files import atomic_write_bytes

    folder = Path(out_dir)
    for name, rows in splits.items():  # each file whole or not at all (atomic rename)
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        atomic_write_bytes(folder / f"{name}.jsonl", text.encode("utf-8"))


def generator_parser(doc: str, default_out: Path, seed: int) -> argparse.ArgumentParser:
    """The command line of every ``scripts/make_<name>_data.py``: ``--out`` and ``--seed`` (a script
    adds its own options to the parser it gets back). ``doc``: the script's docstring."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=default_out, help=f"output folder (default: {default_out})")
    parser.add_argument("--seed", type=int, default=seed, help="random seed (default: %(default)s)")
    return parser


def report_splits(splits: dict[str, list], out_dir: Path, unit: str = "rows", detail: Any = None) -> None:
    """Print one line per written split; ``detail(rows)`` (optional) adds to it, e.g. a label count."""
    for name, rows in splits.items():
        extra = f", {detail(rows)}" if detail is not None else ""
        print(f"{name}: {len(rows)} {unit}{extra} -> {out_dir / (name + '.jsonl')}")


def load_relevance(split: str) -> list[dict]:
    """One split of the relevance dataset: rows with ``query``, ``title``, ``category`` and ``label``
    (int, 1 = relevant, 0 = not relevant)."""
    return load_bundled("relevance", split)


__all__ = [
    "RELEVANCE_SPLITS",
    "SPLITS",
    "bundled_datasets",
    "generator_parser",
    "load_bundled",
    "load_relevance",
    "report_splits",
    "write_splits",
]
