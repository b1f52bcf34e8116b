"""Small datasets bundled with deltatune for demos, recipes and tests, one folder per dataset.

Each folder holds ``train.jsonl``, ``valid.jsonl`` and ``test.jsonl``, generated reproducibly by a
script in the repository's ``scripts/`` folder (``scripts/make_<name>_data.py``).

``relevance``: synthetic e-commerce query/product-title pairs labelled 1 when the title matches the
query's intent and 0 otherwise (half of the negatives are hard, same-category near misses);
3000 train / 500 valid / 500 test rows (``scripts/make_relevance_data.py``).
"""

from __future__ import annotations

import json
from importlib import resources

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


def load_relevance(split: str) -> list[dict]:
    """One split of the relevance dataset: rows with ``query``, ``title``, ``category`` and ``label``
    (int, 1 = relevant, 0 = not relevant)."""
    return load_bundled("relevance", split)


__all__ = ["RELEVANCE_SPLITS", "SPLITS", "bundled_datasets", "load_bundled", "load_relevance"]
