"""The bundled relevance dataset: reproducible, balanced, disjoint splits, well-formed rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deltatune.data import RELEVANCE_SPLITS, load_relevance

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_relevance_data.py"
SHIPPED = ROOT / "src" / "deltatune" / "data" / "relevance"


def test_generator_reproduces_shipped_files(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], check=True, capture_output=True)
    for split in RELEVANCE_SPLITS:
        name = f"{split}.jsonl"
        assert (tmp_path / name).read_bytes() == (SHIPPED / name).read_bytes(), f"{name} differs from the generator"


@pytest.mark.parametrize("split", RELEVANCE_SPLITS)
def test_rows_have_the_four_fields(split: str) -> None:
    rows = load_relevance(split)
    assert rows
    for row in rows:
        assert set(row) == {"query", "title", "category", "label"}
        assert isinstance(row["query"], str) and row["query"].strip()
        assert isinstance(row["title"], str) and row["title"].strip()
        assert isinstance(row["category"], str) and row["category"].strip()
        assert row["label"] in (0, 1) and isinstance(row["label"], int)


@pytest.mark.parametrize("split", RELEVANCE_SPLITS)
def test_labels_are_balanced(split: str) -> None:
    labels = [row["label"] for row in load_relevance(split)]
    share = sum(labels) / len(labels)
    assert 0.4 <= share <= 0.6, f"{split}: {share:.1%} positive"


def test_splits_are_disjoint() -> None:
    pairs = {split: {(r["query"], r["title"]) for r in load_relevance(split)} for split in RELEVANCE_SPLITS}
    for i, a in enumerate(RELEVANCE_SPLITS):
        for b in RELEVANCE_SPLITS[i + 1 :]:
            assert not pairs[a] & pairs[b], f"{a} and {b} share (query, title) pairs"


def test_unknown_split_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown split"):
        load_relevance("dev")
