"""The deltatune command: help from the dataclasses, inspect, recipes, demo, and every bad input (exit 2)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.test_training_support import make_tiny_model_dir, tiny_recipe, write_recipe

from deltatune.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def finished_run(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished tiny run: (its recipe file, its output folder)."""
    base = tmp_path_factory.mktemp("run")
    out = base / "out"
    recipe = write_recipe(base / "tiny.yaml", tiny_recipe(model_dir, out, train={"max_steps": 2}))
    assert main(["train", str(recipe)]) == 0
    return recipe, out


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ----------------------------------------------------------------------------- help, recipes, demo
def test_train_help_lists_every_recipe_key_with_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    from deltatune.training.config import Recipe, field_help

    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for key, _, _, help_text in field_help(Recipe):
        assert key in text
        assert " ".join(help_text.split()) in text, key


def test_recipes_lists_the_shipped_ones(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["recipes"], capsys)
    assert code == 0 and "relevance" in out and "deltatune train" in out


def test_recipes_tasks_lists_every_task_with_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses

    from deltatune.training.tasks import task_kinds

    code, out, _ = run_cli(["recipes", "--tasks"], capsys)
    assert code == 0
    for name, kind in task_kinds().items():
        assert f"{name}: {kind.summary}" in out
        for f in dataclasses.fields(kind.options_cls):
            assert f"task_options.{f.name}" in out and f.metadata["help"] in out


def test_demo_takes_its_own_options(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import deltatune.demo

    seen: list[object] = []
    monkeypatch.setattr(deltatune.demo, "run", lambda args: seen.append(args) or 0)
    assert main(["demo", "--quick", "--out", "x", "--epochs", "2"]) == 0
    args = seen[0]
    assert args.quick and str(args.out) == "x" and args.epochs == 2  # type: ignore[attr-defined]
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "--epochs" in capsys.readouterr().out


# ----------------------------------------------------------------------------- train and inspect
def test_inspect_reads_the_adapter_folder(finished_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import load_file

    _, out = finished_run
    code, text, _ = run_cli(["inspect", str(out / "adapter")], capsys)
    assert code == 0
    for expected in ("LORA (SEQ_CLS)", "r=4 x4", "['query', 'value'] -> 4 modules adapted", "classifier",
                     "written by  deltatune 0.1.0"):  # fmt: skip
        assert expected in text, expected
    code, text, _ = run_cli(["inspect", "--json", str(out / "adapter")], capsys)
    info = json.loads(text)
    tensors = load_file(out / "adapter" / "adapter_model.safetensors")
    assert info["parameters"] == sum(t.numel() for t in tensors.values()) and info["tensors"] == len(tensors)
    assert info["base_model"].endswith("tiny-model0") and info["method"] == "LORA" and info["size_bytes"] > 0


def test_rerunning_a_finished_run_does_nothing(
    finished_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    recipe, out = finished_run
    before = (out / "results.json").read_bytes()
    code, text, _ = run_cli(["train", str(recipe)], capsys)
    assert code == 0 and "already holds this run" in text and (out / "results.json").read_bytes() == before


def test_a_different_run_is_refused_unless_asked(
    finished_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    recipe, out = finished_run
    before = sorted(p.name for p in out.iterdir())
    code, _, err = run_cli(["train", str(recipe), "train.lr=0.02"], capsys)
    assert code == 2 and "holds a different run (train.lr: 0.005 -> 0.02)" in err and "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == before
    code, _, err = run_cli(["train", str(recipe), "train.lr=0.02", "--overwrite", "--resume"], capsys)
    assert code == 2 and "contradict" in err


def test_overwrite_starts_over(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(model_dir, out, train={"max_steps": 2}))
    out.mkdir()
    (out / "notes.txt").write_text("not a run")
    code, _, err = run_cli(["train", str(recipe)], capsys)
    assert code == 2 and "holds no deltatune run" in err and (out / "notes.txt").exists()
    code, _, _ = run_cli(["train", str(recipe), "--overwrite"], capsys)
    assert code == 0 and not (out / "notes.txt").exists() and (out / "adapter" / "adapter_config.json").is_file()


# ----------------------------------------------------------------------------- bad input: exit 2, nothing written
def bad_rows_file(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl"
    good = {"query": "blue kettle", "title": "Kettle, Blue", "label": 1}
    path.write_text("\n".join(json.dumps(r) for r in [good, good, {"query": "red kettle", "label": 0}, good]) + "\n")
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown_key", r"unknown recipe key 'train\.lrr'\. Did you mean 'train\.lr'\?"),
        ("wrong_type", r"recipe key 'train\.batch_size' expects int, got str 'many'"),
        ("missing_file", r"Data file .*nope\.jsonl does not exist"),
        ("row_without_fields", r"rows\.jsonl, line 3: the row has no \['title'\]"),
        ("bad_label", r"labels\.jsonl, line 1: label='yes' is not an integer class label"),
        ("missing_model", r"model\.path '/no/such/model' does not exist"),
        ("model_without_config", r"has no config\.json"),
        ("unknown_recipe", r"No recipe file 'relevanse\.yml'"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    case: str, message: str, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(model_dir, out, train={"max_steps": 2}))
    args = {
        "unknown_key": ["train.lrr=0.1"],
        "wrong_type": ["train.batch_size=many"],
        "missing_file": [f"data.train_file={tmp_path / 'nope.jsonl'}"],
        "row_without_fields": [f"data.valid_file={bad_rows_file(tmp_path)}"],
        "bad_label": [f"data.test_file={tmp_path / 'labels.jsonl'}"],
        "missing_model": ["model.path=/no/such/model"],
        "model_without_config": [f"model.path={tmp_path}"],
        "unknown_recipe": [],
    }[case]
    (tmp_path / "labels.jsonl").write_text(json.dumps({"query": "q", "title": "t", "label": "yes"}) + "\n")
    target = "relevanse.yml" if case == "unknown_recipe" else str(recipe)
    code, _, err = run_cli(["train", target, *args], capsys)
    assert code == 2, err
    assert err.startswith("deltatune train: error: ")
    assert re.search(message, err), err
    assert not out.exists()


def test_inspect_reads_a_peft_adapter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    peft = pytest.importorskip("peft")
    from tests.models import tiny_bert_cls

    config = peft.LoraConfig(r=2, target_modules=["query", "value"], rank_pattern={"layer.1.attention.self.query": 6})
    peft.get_peft_model(tiny_bert_cls(), config).save_pretrained(tmp_path)
    code, text, _ = run_cli(["inspect", "--json", str(tmp_path)], capsys)
    info = json.loads(text)
    assert code == 0 and info["method"] == "LORA" and info["written_by"].startswith("PEFT 0.")
    assert info["ranks"] == {"2": 3, "6": 1} and info["adapted_modules"] == 4


def test_inspect_bad_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["inspect", str(tmp_path)], capsys)
    assert code == 2 and "No adapter_config.json" in err


def test_installed_command_exit_code() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "deltatune.cli.main", "train", "relevance", "train.lr=fast"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2 and "'train.lr' expects float" in done.stderr
