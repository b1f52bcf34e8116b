"""``deltatune predict TARGET INPUT OUTPUT``: batch-score a JSONL/CSV file with a trained adapter.

The daily scoring job: rows stream from INPUT in chunks (the file is never held whole), each row is
checked as it is read (a bad row names its line), predictions are appended to a temporary file
beside OUTPUT, and OUTPUT appears only when every row is scored. An existing OUTPUT is kept unless
``--overwrite``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

from deltatune.training.errors import DataError


def add_parser(sub: Any) -> None:
    from deltatune.cli.runs import add_target_arguments

    p = sub.add_parser(
        "predict",
        help="batch-score a JSONL/CSV file with a trained adapter",
        description="Score every row of INPUT (.jsonl or .csv) with a trained adapter and write the rows with "
        "their predictions to OUTPUT (.jsonl or .csv), atomically.",
    )
    add_target_arguments(p)
    p.add_argument("input", help="rows to score (.jsonl or .csv); they need the task's input fields")
    p.add_argument("output", help="where to write the scored rows (.jsonl or .csv)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _count_rows(path: Path) -> int:
    with path.open("rb") as fh:
        lines = sum(1 for line in fh if line.strip())
    return lines - 1 if path.suffix == ".csv" else lines


def _chunks(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    while chunk := list(islice(rows, size)):
        yield chunk


class _Writer:
    """Rows to a .jsonl or .csv stream (CSV: list and dict values as JSON text)."""

    def __init__(self, fh: TextIO, csv_format: bool) -> None:
        self.fh, self.csv_format = fh, csv_format
        self.csv: csv.DictWriter[str] | None = None

    def write(self, row: dict[str, Any]) -> None:
        if not self.csv_format:
            self.fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            return
        flat = {k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v for k, v in row.items()}
        if self.csv is None:
            self.csv = csv.DictWriter(self.fh, fieldnames=list(flat), extrasaction="ignore")
            self.csv.writeheader()
        self.csv.writerow(flat)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from deltatune.cli.runs import open_target
    from deltatune.training.data import iter_rows

    source, target = Path(args.input), Path(args.output)
    for path, what in ((source, "INPUT"), (target, "OUTPUT")):
        if path.suffix not in (".jsonl", ".csv"):
            raise DataError(f"{what} {path} must end in .jsonl or .csv.")
    if not source.is_file():
        raise DataError(f"INPUT {source} does not exist.")
    if target.exists() and not args.overwrite:
        raise DataError(f"OUTPUT {target} exists; pass --overwrite to replace it, or choose another file.")
    if target.resolve() == source.resolve():
        raise DataError("OUTPUT must differ from INPUT.")
    opened = open_target(args.target, args.adapter, args.overrides)
    setup = opened.setup
    if setup.predict is None:
        raise DataError(f"Task {opened.recipe.task!r} has no predict step.")
    fields = setup.prediction_fields()
    batch_size = args.batch_size or opened.recipe.eval.batch_size
    rows = iter_rows(source, fields)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    scored = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh, torch.no_grad():
            writer = _Writer(fh, target.suffix == ".csv")
            bar = tqdm(total=_count_rows(source), unit="row", desc="predict", disable=args.no_progress)
            for chunk in _chunks(rows, batch_size):
                for row, prediction in zip(chunk, setup.predict(opened.model, chunk, batch_size), strict=True):
                    writer.write({**row, **prediction})
                scored += len(chunk)
                bar.update(len(chunk))
            bar.close()
            fh.flush()
            os.fsync(fh.fileno())
        if not scored:
            raise DataError(f"INPUT {source} holds no rows.")
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    print(f"scored {scored} rows with {opened.adapter_dir} -> {target}")
    return 0
