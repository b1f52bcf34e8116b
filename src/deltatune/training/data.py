"""Rows for a run: JSONL/CSV files or a bundled dataset, checked before anything trains.

A row missing a field the task needs is an error that names the file and the line, raised while
reading, so a bad file stops the run before any output is written.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from deltatune.training.errors import DataError

Rows = list[dict[str, Any]]
SPLITS = ("train", "valid", "test")


def read_rows(path: str | Path, required: Sequence[str], label_field: str | None = None) -> Rows:
    """Read a .jsonl or .csv file; every row must hold ``required`` (and an integer ``label_field``)."""
    rows = list(iter_rows(path, required, label_field))
    if not rows:
        raise DataError(f"Data file {path} holds no rows.")
    return rows


def iter_rows(path: str | Path, required: Sequence[str], label_field: str | None = None) -> Iterator[dict[str, Any]]:
    """The rows of a .jsonl or .csv file one at a time (for files too large to hold), each checked."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Data file {path} does not exist; check the path (relative paths start at {Path.cwd()}).")
    with path.open(encoding="utf-8", newline="") as fh:
        if path.suffix == ".csv":
            for i, row in enumerate(csv.DictReader(fh)):
                yield check_row(dict(row), required, label_field, f"{path}, line {i + 2}")  # line 1: the header
            return
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {number}: not valid JSON ({exc.msg}).") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}.")
            yield check_row(row, required, label_field, f"{path}, line {number}")


def check_row(row: dict[str, Any], required: Sequence[str], label_field: str | None, where: str) -> dict[str, Any]:
    missing = [f for f in required if row.get(f) in (None, "")]
    if missing:
        raise DataError(f"{where}: the row has no {missing} (it has {sorted(row)}); every row needs {list(required)}.")
    if label_field is not None:
        value = row[label_field]
        try:
            label = int(value)
        except (TypeError, ValueError):
            raise DataError(f"{where}: {label_field}={value!r} is not an integer class label.") from None
        if isinstance(value, float) and value != label:
            raise DataError(f"{where}: {label_field}={value!r} is not an integer class label.")
        row = {**row, label_field: label}
    return row


def load_split(
    split: str,
    file: str | None,
    dataset: str | None,
    required: Sequence[str],
    label_field: str | None,
    limit: int = 0,
) -> Rows:
    """Rows of one split: from ``file`` if given, else from the bundled ``dataset``."""
    if file is not None:
        rows = read_rows(file, required, label_field)
    elif dataset is not None:
        rows = bundled(dataset, split, required, label_field)
    else:
        raise DataError(f"No data for the {split} split: set data.{split}_file or data.dataset.")
    return rows[:limit] if limit else rows


def bundled(dataset: str, split: str, required: Sequence[str], label_field: str | None) -> Rows:
    from deltatune import data as bundled_data

    names = bundled_data.bundled_datasets()
    if dataset not in names:
        raise DataError(f"Unknown bundled dataset {dataset!r}; deltatune ships {names}. Use data.*_file for yours.")
    rows = bundled_data.load_bundled(dataset, split)
    where = f"bundled dataset {dataset!r} ({split} split)"
    return [check_row(row, required, label_field, f"{where}, row {i + 1}") for i, row in enumerate(rows)]
