"""``deltatune eval``, ``predict`` and ``merge`` on a finished tiny run, and their bad inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from tests.test_training_support import make_tiny_model_dir, tiny_recipe, write_recipe

from deltatune.cli.main import main
from deltatune.data import load_relevance


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(model folder, recipe file, run folder) of a finished tiny relevance run."""
    base = tmp_path_factory.mktemp("apply")
    model_dir = make_tiny_model_dir(base / "model")
    out = base / "run"
    recipe = write_recipe(base / "tiny.yaml", tiny_recipe(model_dir, out, train={"max_steps": 3}))
    assert main(["train", str(recipe)]) == 0
    return model_dir, recipe, out


def adapted_probs(model_dir: Path, adapter: Path, rows: list[dict]) -> torch.Tensor:
    """A reference computation through the Python API: P(class 1) per row."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import deltatune as dt

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = dt.DeltaModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(model_dir), adapter)
    enc = tokenizer([r["query"] for r in rows], [r["title"] for r in rows], truncation=True, max_length=32,
                    padding=True, return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        return model(**enc).logits.softmax(-1)[:, 1]


def test_eval_prints_and_writes_the_metrics(finished_run: tuple[Path, Path, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    _, recipe, out = finished_run
    assert main(["eval", str(out), "--split", "test", "--base", "--json", str(tmp_path / "m.json")]) == 0
    printed = capsys.readouterr().out
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["rows"] == 32 and "accuracy" in printed and "base" in printed
    results = json.loads((out / "results.json").read_text())
    # The run's own test metrics (computed by the runner at the end of training) match eval's.
    assert written["adapted"]["accuracy"] == pytest.approx(results["adapted"]["accuracy"], abs=1e-4)
    assert written["adapted"]["f1"] == pytest.approx(results["adapted"]["f1"], abs=1e-4)
    # A recipe file plus --adapter gives the same numbers.
    assert main(["eval", str(recipe), "--adapter", str(out / "adapter"), "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["adapted"] == written["adapted"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_predict_scores_every_row_like_the_python_api(finished_run: tuple[Path, Path, Path], tmp_path: Path,
                                                      fmt: str) -> None:  # fmt: skip
    import csv

    model_dir, _, out = finished_run
    rows = [{"id": i, "query": r["query"], "title": r["title"]} for i, r in enumerate(load_relevance("test")[:21])]
    source = tmp_path / f"in.{fmt}"
    if fmt == "jsonl":
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with source.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["id", "query", "title"])
            writer.writeheader()
            writer.writerows(rows)
    target = tmp_path / f"out.{fmt}"
    assert main(["predict", str(out), str(source), str(target), "--batch-size", "8", "--no-progress"]) == 0
    if fmt == "jsonl":
        scored = [json.loads(line) for line in target.read_text().splitlines()]
    else:
        with target.open(newline="") as fh:
            scored = list(csv.DictReader(fh))
    assert [str(s["id"]) for s in scored] == [str(r["id"]) for r in rows]
    expected = adapted_probs(model_dir, out / "adapter", rows)
    got = torch.tensor([float(s["score"]) for s in scored])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert all(int(s["label"]) == int(p > 0.5) for s, p in zip(scored, expected, strict=True))


def test_predict_bad_input_writes_nothing(finished_run: tuple[Path, Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    _, _, out = finished_run
    source = tmp_path / "in.jsonl"
    source.write_text('{"query": "usb c cable", "title": "braided cable"}\n{"query": "phone case"}\n')
    target = tmp_path / "out.jsonl"
    assert main(["predict", str(out), str(source), str(target), "--no-progress"]) == 2
    assert re.search(r"in\.jsonl, line 2: the row has no \['title'\]", capsys.readouterr().err)
    assert not target.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    target.write_text("keep me\n")
    source.write_text('{"query": "usb c cable", "title": "braided cable"}\n')
    assert main(["predict", str(out), str(source), str(target)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err and target.read_text() == "keep me\n"
    assert main(["predict", str(out), str(tmp_path / "missing.jsonl"), str(tmp_path / "o.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["predict", str(out), str(source), str(tmp_path / "o.txt")]) == 2
    assert "must end in .jsonl or .csv" in capsys.readouterr().err


@pytest.mark.parametrize("via", ["run", "adapter"])
def test_merge_writes_a_plain_model_with_the_adapter_in_it(finished_run: tuple[Path, Path, Path], tmp_path: Path,
                                                           via: str) -> None:  # fmt: skip
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir, _, out = finished_run
    target = str(out) if via == "run" else str(out / "adapter")
    merged_dir = tmp_path / "merged"
    assert main(["merge", target, str(merged_dir)] + (["--base", str(model_dir)] if via == "adapter" else [])) == 0
    merged = AutoModelForSequenceClassification.from_pretrained(merged_dir)
    assert not any("lora" in k for k in merged.state_dict())
    rows = load_relevance("test")[:6]
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    enc = tokenizer([r["query"] for r in rows], [r["title"] for r in rows], truncation=True, max_length=32,
                    padding=True, return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        got = merged.eval()(**enc).logits.softmax(-1)[:, 1]
    torch.testing.assert_close(got, adapted_probs(model_dir, out / "adapter", rows), atol=1e-5, rtol=0)


def test_merge_and_eval_bad_input(finished_run: tuple[Path, Path, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    _, recipe, out = finished_run
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    assert main(["merge", str(out), str(taken)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err and (taken / "x").read_text() == "x"
    assert main(["eval", str(recipe), "--adapter", str(tmp_path)]) == 2
    assert "No adapter in" in capsys.readouterr().err
    assert main(["eval", str(tmp_path)]) == 2
    assert "without run.json" in capsys.readouterr().err
