"""A DeltaModel under transformers.Trainer with the AdapterCheckpoints callback (tiny BERT, CPU)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.models import tiny_bert_cls

import deltatune as dt
from deltatune.errors import DeltatuneError

transformers = pytest.importorskip("transformers")
from deltatune.integrations.trainer import AdapterCheckpoints  # noqa: E402


class Rows(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(1, 64, (n, 8), generator=g)
        self.y = self.x[:, 0] % 3

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        # "note" is a column the model does not take: the Trainer must drop it, as for a plain model.
        return {"input_ids": self.x[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": self.y[i],
                "note": f"row {i}"}  # fmt: skip


def make_model() -> dt.DeltaModel:
    torch.manual_seed(0)
    config = dt.LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS", init_lora_weights=False)
    return dt.wrap(tiny_bert_cls(), config)


def make_trainer(out: Path, model: dt.DeltaModel, **overrides: object) -> transformers.Trainer:
    counter = itertools.count(1)
    settings = dict(
        output_dir=str(out), use_cpu=True, report_to=[], save_strategy="steps", save_steps=2, eval_strategy="steps",
        eval_steps=2, max_steps=6, per_device_train_batch_size=4, learning_rate=1e-2, logging_steps=2,
        disable_tqdm=True, seed=0,  # no remove_unused_columns / label_names: the defaults must work
        # a metric that only gets worse, so the best checkpoint is the first one (not the last)
        load_best_model_at_end=True, metric_for_best_model="order", greater_is_better=False,
    )  # fmt: skip
    settings.update(overrides)
    args = transformers.TrainingArguments(**settings)
    return transformers.Trainer(
        model=model,
        args=args,
        train_dataset=Rows(48, 0),
        eval_dataset=Rows(16, 1),
        compute_metrics=lambda pred: {"order": float(next(counter)), "n": float(len(pred.label_ids))},
        callbacks=[AdapterCheckpoints()],
    )


def adapter_tensors(model: dt.DeltaModel) -> dict[str, torch.Tensor]:
    from deltatune.checkpoint import adapter_state

    return {k: v.detach().clone() for k, v in adapter_state(model, "default").items()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    out = tmp_path_factory.mktemp("trainer")
    model = make_model()
    model.on_optimizer_step = STEP_CALLS.append  # type: ignore[method-assign]
    make_trainer(out, model).train()
    return out, adapter_tensors(model)


STEP_CALLS: list[int] = []


def test_per_step_hook_runs_once_per_optimizer_step(trained: tuple[Path, dict[str, torch.Tensor]]) -> None:
    assert STEP_CALLS == [0, 1, 2, 3, 4, 5]  # Trainer's global_step before each step


def test_checkpoints_hold_the_adapter_in_peft_layout(trained: tuple[Path, dict[str, torch.Tensor]]) -> None:
    out, _ = trained
    model = make_model()
    adapter_keys = {k for k, v in model.state_dict().items()}  # the callback's hook is gone: a fresh model
    for step in (2, 4, 6):
        folder = out / f"checkpoint-{step}"
        assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
        assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == "LORA"
        trainer_file = load_file(folder / "model.safetensors")  # what the Trainer itself wrote
        assert trainer_file and set(trainer_file) < adapter_keys
        assert not any("word_embeddings" in k or k.endswith("dense.weight") for k in trainer_file)
        assert sum(t.numel() for t in trainer_file.values()) == sum(
            t.numel() for t in load_file(folder / "adapter_model.safetensors").values()
        )
        # the PEFT-layout adapter loads onto a fresh base
        dt.DeltaModel.from_pretrained(tiny_bert_cls(), folder)


def test_training_ends_with_the_adapter_in_output_dir(trained: tuple[Path, dict[str, torch.Tensor]]) -> None:
    out, final = trained
    loaded = dt.DeltaModel.from_pretrained(tiny_bert_cls(), out)
    again = adapter_tensors(loaded)
    assert set(again) == set(final) and all(torch.equal(again[k], final[k]) for k in final)


def test_load_best_model_at_end(trained: tuple[Path, dict[str, torch.Tensor]]) -> None:
    out, final = trained
    best = load_file(out / "checkpoint-2" / "adapter_model.safetensors")
    last = load_file(out / "checkpoint-6" / "adapter_model.safetensors")
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"].endswith("checkpoint-2")
    assert set(final) == set(best)
    assert all(torch.equal(final[k], best[k]) for k in final)
    assert not all(torch.equal(final[k], last[k]) for k in final)


def test_resume_from_checkpoint_matches_uninterrupted_run(
    trained: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    out, _ = trained
    model = make_model()
    trainer = make_trainer(tmp_path, model, load_best_model_at_end=False)
    trainer.train(resume_from_checkpoint=str(out / "checkpoint-4"))
    assert trainer.state.global_step == 6
    resumed = load_file(tmp_path / "checkpoint-6" / "adapter_model.safetensors")
    uninterrupted = load_file(out / "checkpoint-6" / "adapter_model.safetensors")
    assert set(resumed) == set(uninterrupted)
    for key in resumed:
        assert torch.equal(resumed[key], uninterrupted[key]), key


def test_trainer_sees_the_wrapped_models_inputs_and_labels() -> None:
    """What the Trainer reads from forward's signature: the inputs to keep and the label names."""
    import inspect

    from transformers import BertConfig, BertForQuestionAnswering
    from transformers.utils import find_labels

    model = make_model()
    params = inspect.signature(model.forward).parameters
    assert {"input_ids", "attention_mask", "labels", "adapter_names"} <= set(params)
    assert find_labels(type(model)) == ["labels"]
    qa = dt.wrap(BertForQuestionAnswering(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                     intermediate_size=16, vocab_size=64)),
                 dt.LoraConfig(r=2, target_modules=["query"]))  # fmt: skip
    assert find_labels(type(qa)) == ["start_positions", "end_positions"]
    assert isinstance(qa, dt.DeltaModel) and type(qa) is not type(model)


def test_callback_needs_a_delta_model(tmp_path: Path) -> None:
    with pytest.raises(DeltatuneError, match="needs a DeltaModel"):
        make_trainer(tmp_path, tiny_bert_cls())  # type: ignore[arg-type]


def test_detach_restores_the_full_state_dict() -> None:
    model = make_model()
    full = set(model.state_dict())
    callback = AdapterCheckpoints()
    callback.attach(model)
    only = set(model.state_dict())
    assert only < full and all("adapters" in k or "modules_to_save" in k for k in only)
    result = model.load_state_dict({k: v for k, v in model.state_dict().items()}, strict=False)
    assert result.missing_keys == []
    callback.detach()
    assert set(model.state_dict()) == full


def test_typed_delta_model_copies_and_pickles() -> None:
    import copy
    import pickle

    model = make_model().eval()
    x = torch.randint(1, 64, (2, 8))
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert type(twin) is type(model) and isinstance(twin, dt.DeltaModel)
        torch.testing.assert_close(twin(input_ids=x).logits, model(input_ids=x).logits, atol=0, rtol=0)


def test_step_hook_runs_once_per_step_even_with_two_callbacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deltatune.integrations.trainer_hooks import DeltaTuneCallback

    model = make_model()
    steps: list[int] = []
    monkeypatch.setattr(type(model), "on_optimizer_step", lambda self, step: steps.append(step))
    trainer = make_trainer(tmp_path, model, load_best_model_at_end=False, eval_strategy="no", save_strategy="no")
    trainer.add_callback(DeltaTuneCallback())
    trainer.train()
    assert steps == list(range(6))
