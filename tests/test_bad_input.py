"""Bad input: a deltatune error that names the problem and the fix, and nothing half-done."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tests.models import MLP, tiny_llama

import deltatune as dt


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _structure(model: torch.nn.Module) -> list[tuple[str, str]]:
    return [(n, type(m).__name__) for n, m in model.named_modules()]


def test_target_that_matches_nothing_lists_closest_names() -> None:
    with pytest.raises(dt.TargetError, match=r"'q_prj'.*Closest module names: \[.*'q_proj'"):
        dt.wrap(tiny_llama(), dt.LoraConfig(target_modules=["q_prj", "v_proj"]))


def test_regex_that_matches_nothing_is_an_error() -> None:
    with pytest.raises(dt.TargetError, match="matches no module"):
        dt.wrap(tiny_llama(), dt.LoraConfig(target_modules=r".*\.attn\.q"))


def test_targets_excluded_away_is_an_error() -> None:
    with pytest.raises(dt.TargetError, match="selects no module"):
        dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin0"], exclude_modules=["lin0"]))


def test_unsupported_layer_type_names_module_and_fix() -> None:
    model = MLP()
    before = _structure(model)
    with pytest.raises(dt.UnsupportedLayerError, match="act.*ReLU.*exclude_modules"):
        dt.wrap(model, dt.LoraConfig(target_modules=["lin0", "act"]))
    assert _structure(model) == before


def test_no_default_targets_for_unknown_model_type() -> None:
    with pytest.raises(dt.TargetError, match="no default.*set target_modules"):
        dt.wrap(MLP(), dt.LoraConfig())


@pytest.mark.parametrize("name", ["a/b", "a\\b", "..", ".", "", "__base__", " x", 3])
def test_invalid_adapter_names(name: object) -> None:
    model = dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin0"]))
    before = _structure(model)
    with pytest.raises(dt.AdapterNameError, match="Invalid adapter name"):
        model.add_adapter(name, dt.LoraConfig(target_modules=["lin0"]))  # type: ignore[arg-type]
    assert _structure(model) == before and list(model.peft_config) == ["default"]
    with pytest.raises(dt.AdapterNameError):
        dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin0"]), adapter_name=name)  # type: ignore[arg-type]


def test_duplicate_adapter_name_leaves_model_unchanged() -> None:
    model = dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin0"], init_lora_weights=False))
    before, structure = _state(model), _structure(model)
    with pytest.raises(dt.AdapterNameError, match="already exists"):
        model.add_adapter("default", dt.LoraConfig(target_modules=["lin1"], r=2))
    assert _structure(model) == structure
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def _mlp() -> MLP:
    torch.manual_seed(0)
    return MLP()


def _saved(tmp_path, **kwargs) -> tuple[dt.DeltaModel, str]:
    model = dt.wrap(_mlp(), dt.LoraConfig(target_modules=["lin0", "lin1"], init_lora_weights=False, **kwargs))
    model.save_pretrained(tmp_path)
    return model, str(tmp_path)


def test_checkpoint_shape_mismatch_names_key_and_shapes(tmp_path) -> None:
    _, folder = _saved(tmp_path, r=4)
    config = json.loads(Path(os.path.join(folder, "adapter_config.json")).read_text())
    config["r"] = 2
    Path(os.path.join(folder, "adapter_config.json")).write_text(json.dumps(config))
    with pytest.raises(dt.CheckpointError, match=r"lin0\.lora_A\.weight has shape \(4, 10\).*expects \(2, 10\)"):
        dt.DeltaModel.from_pretrained(MLP(), folder)


def test_checkpoint_filling_part_of_adapter(tmp_path) -> None:
    _, folder = _saved(tmp_path)
    path = os.path.join(folder, "adapter_model.safetensors")
    tensors = load_file(path)
    del tensors["base_model.model.lin1.lora_B.weight"]
    save_file(tensors, path)
    with pytest.raises(dt.CheckpointError, match=r"fills only 3 of 4 tensors.*lin1\.lora_B\.weight"):
        dt.DeltaModel.from_pretrained(MLP(), folder)


def test_checkpoint_with_foreign_tensors(tmp_path) -> None:
    _, folder = _saved(tmp_path)
    path = os.path.join(folder, "adapter_model.safetensors")
    tensors = load_file(path)
    tensors["base_model.model.nowhere.lora_A.weight"] = torch.zeros(2, 2)
    save_file(tensors, path)
    with pytest.raises(dt.CheckpointError, match="match nothing in the model.*nowhere"):
        dt.DeltaModel.from_pretrained(MLP(), folder)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupted_safetensors(tmp_path, damage: str) -> None:
    _, folder = _saved(tmp_path)
    path = os.path.join(folder, "adapter_model.safetensors")
    data = Path(path).read_bytes()
    new = {"truncate": data[: len(data) // 2], "garbage": b"\x13\x00" * 64, "empty": b""}[damage]
    Path(path).write_bytes(new)
    with pytest.raises(dt.CheckpointError, match="corrupted or truncated"):
        dt.DeltaModel.from_pretrained(MLP(), folder)


def test_malformed_json(tmp_path) -> None:
    _, folder = _saved(tmp_path)
    Path(os.path.join(folder, "adapter_config.json")).write_text('{"peft_type": "LORA", ')
    with pytest.raises(dt.CheckpointError, match="not valid JSON"):
        dt.DeltaModel.from_pretrained(MLP(), folder)


def test_unknown_peft_type_lists_supported(tmp_path) -> None:
    _, folder = _saved(tmp_path)
    path = os.path.join(folder, "adapter_config.json")
    config = json.loads(Path(path).read_text())
    config["peft_type"] = "MAGIC"
    Path(path).write_text(json.dumps(config))
    with pytest.raises(dt.ConfigError, match=r"Unknown peft_type 'MAGIC'.*supports \[.*'LORA'"):
        dt.DeltaModel.from_pretrained(MLP(), folder)


def test_unknown_config_keys_warn_and_are_ignored(tmp_path) -> None:
    model, folder = _saved(tmp_path)
    path = os.path.join(folder, "adapter_config.json")
    config = json.loads(Path(path).read_text())
    config["shiny_new_option"] = 3
    Path(path).write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="shiny_new_option"):
        loaded = dt.DeltaModel.from_pretrained(_mlp(), folder)
    x = torch.randn(2, 10)
    assert torch.equal(loaded(x), model.eval()(x))


def test_enabled_unsupported_peft_feature_is_an_error(tmp_path) -> None:
    _, folder = _saved(tmp_path)
    path = os.path.join(folder, "adapter_config.json")
    config = json.loads(Path(path).read_text())
    config["lora_bias"] = True
    Path(path).write_text(json.dumps(config))
    with pytest.raises(dt.ConfigError, match="lora_bias=True.*does not support"):
        dt.DeltaModel.from_pretrained(MLP(), folder)


def test_failed_load_adapter_leaves_model_unchanged(tmp_path) -> None:
    _, folder = _saved(tmp_path)
    os.remove(os.path.join(folder, "adapter_model.safetensors"))
    model = dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin0"]))
    structure = _structure(model)
    with pytest.raises(dt.CheckpointError, match="No adapter_model.safetensors"):
        model.load_adapter(folder, adapter_name="other")
    assert list(model.peft_config) == ["default"] and _structure(model) == structure


def test_missing_folder(tmp_path) -> None:
    with pytest.raises(dt.CheckpointError, match="not a Hub id"):
        dt.DeltaModel.from_pretrained(MLP(), str(tmp_path / "nope" / "deeper" / "x"))


def test_crash_mid_save_leaves_previous_adapter_intact(tmp_path, monkeypatch) -> None:
    model, folder = _saved(tmp_path)
    files = {n: Path(folder, n).read_bytes() for n in os.listdir(folder)}
    model.add_adapter("x", dt.LoraConfig(target_modules=["lin0", "lin1"], r=2, init_lora_weights=False))

    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr("safetensors.torch.save_file", crash)
    model.set_adapter("x")
    model.peft_config["default"] = model.peft_config["x"]  # a different adapter now saves as "default"
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(folder, selected_adapters=["default"])
    assert {n: Path(folder, n).read_bytes() for n in os.listdir(folder)} == files
    monkeypatch.undo()
    dt.DeltaModel.from_pretrained(MLP(), folder)  # still loads


def test_safe_merge_refuses_nan_and_changes_nothing() -> None:
    model = dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin0", "lin1"], init_lora_weights=False))
    with torch.no_grad():
        next(a for _, a in model.adapter_modules("default") if True).lora_B.weight[0, 0] = float("nan")
    # lin0 is fine, lin1 would be poisoned: lin0's merge must be rolled back too
    layers = dict(model.adapted_layers())
    with torch.no_grad():
        layers["lin0"].adapters["default"].lora_B.weight.fill_(0.5)
        layers["lin1"].adapters["default"].lora_B.weight[0, 0] = float("nan")
    before = {n: l.base_layer.weight.clone() for n, l in layers.items()}
    with pytest.raises(dt.MergeError, match="NaN or Inf"):
        model.merge_adapter(safe_merge=True)
    for n, layer in layers.items():
        assert not layer.merged
        torch.testing.assert_close(layer.base_layer.weight, before[n], atol=1e-6, rtol=0)


def test_training_a_frozen_adapter_warns(tmp_path) -> None:
    _, folder = _saved(tmp_path)
    loaded = dt.DeltaModel.from_pretrained(MLP(), folder)
    loaded.train()
    with pytest.warns(UserWarning, match="is_trainable=True"):
        loaded(torch.randn(2, 10))
    trainable = dt.DeltaModel.from_pretrained(MLP(), folder, is_trainable=True)
    assert trainable.get_nb_trainable_parameters()[0] > 0


def test_mixed_batch_errors() -> None:
    model = dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin0"]))
    x = torch.randn(3, 10)
    with pytest.raises(dt.AdapterNameError, match="No adapter named 'nope'"):
        model(x, adapter_names=["default", "nope", "default"])
    with pytest.raises(dt.DeltatuneError, match="one adapter name per sample"):
        model(x, adapter_names=["default", "default"])
    # A divisor of the batch is no excuse either (only generate repeats names over beams).
    with pytest.raises(dt.DeltatuneError, match="1 entries for a batch of 4 samples"):
        model(torch.randn(4, 10), adapter_names=["default"])
    llama = dt.wrap(tiny_llama(), dt.LoraConfig(target_modules=["q_proj"]))
    with pytest.raises(dt.DeltatuneError, match="2 entries for a batch of 4 samples"):
        llama(input_ids=torch.randint(1, 64, (4, 5)), adapter_names=["default", "__base__"])
    model.merge_adapter()
    with pytest.raises(dt.MergeError, match="unmerge_adapter"):
        model(x, adapter_names=["default"] * 3)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"r": 0}, "positive integer"),
        ({"lora_dropout": 1.5}, r"\[0, 1\)"),
        ({"bias": "some"}, "use one of"),
        ({"init_lora_weights": "magic"}, "not supported"),
        ({"rank_pattern": {"(": 2}}, "not a valid regex"),
        ({"task_type": "CLS"}, "task_type"),
        ({"layers_pattern": "layers"}, "layers_to_transform"),
    ],
)
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(dt.ConfigError, match=match):
        dt.LoraConfig(target_modules=["lin0"], **kwargs)


def test_save_pretrained_arguments(tmp_path) -> None:
    """PEFT's save_pretrained arguments do what they say; anything else is refused before writing."""
    model = dt.wrap(_mlp(), dt.LoraConfig(target_modules=["lin0"], init_lora_weights=False))
    with pytest.raises(dt.DeltatuneError, match=r"unknown argument\(s\) \['push_to_hub'\]"):
        model.save_pretrained(tmp_path / "a", push_to_hub=True)
    assert not (tmp_path / "a").exists()
    with pytest.raises(dt.DeltatuneError, match="modules_to_save"):
        model.save_pretrained(tmp_path / "b", save_embedding_layers=True)
    assert not (tmp_path / "b").exists()
    model.save_pretrained(tmp_path / "c", is_main_process=False)  # another rank: writes nothing
    assert not (tmp_path / "c").exists()
    with pytest.warns(UserWarning, match="safetensors only"):
        model.save_pretrained(tmp_path / "d", safe_serialization=False)
    assert sorted(os.listdir(tmp_path / "d")) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    model.save_pretrained(tmp_path / "e", safe_serialization=True, save_embedding_layers="auto", is_main_process=True)
    assert (
        load_file(tmp_path / "e" / "adapter_model.safetensors").keys()
        == load_file(tmp_path / "d" / "adapter_model.safetensors").keys()
    )


def test_load_options(tmp_path) -> None:
    """PEFT's loading options: the ones deltatune honours load; the rest are refused, never ignored."""
    _, folder = _saved(tmp_path)
    loaded = dt.DeltaModel.from_pretrained(_mlp(), folder, low_cpu_mem_usage=True, autocast_adapter_dtype=True)
    assert loaded.peft_config["default"].peft_type == "LORA"
    loaded.load_adapter(folder, "second", revision="main", torch_device=None)  # a Hub option: unused for a folder
    for option, match in (
        ({"torch_device": "cuda"}, "move the model"),
        ({"autocast_adapter_dtype": False}, "float32"),
        ({"ephemeral_gpu_offload": True}, "offload"),
        ({"revison": "main"}, r"Unknown loading option\(s\) \['revison'\].*revision"),
    ):
        with pytest.raises(dt.CheckpointError, match=match):
            loaded.load_adapter(folder, "third", **option)
        assert "third" not in loaded.peft_config


def test_set_adapter_needs_names() -> None:
    model = dt.wrap(_mlp(), dt.LoraConfig(target_modules=["lin0"]))
    for bad in ([], None, 3):
        with pytest.raises(dt.AdapterNameError, match="disable_adapters"):
            model.set_adapter(bad)  # type: ignore[arg-type]
    assert model.active_adapters == ["default"]


@pytest.mark.parametrize("field", ["target_modules", "exclude_modules"])
def test_target_lists_of_the_wrong_type(field: str) -> None:
    with pytest.raises(dt.ConfigError, match=f"{field} must be a regex string, a list of module names or None"):
        dt.LoraConfig(**{field: 5})
