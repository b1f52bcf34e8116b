"""The sft recipe: response-only labels, per-target-token loss, greedy generation, metrics by hand, a smoke run."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from deltatune.training import load_recipe
from deltatune.training.errors import DataError, ModelPathError
from deltatune.training.tasks.sft import IGNORE, model_config

ROOT = Path(__file__).resolve().parents[1]


def _generator():  # scripts/ is not a package
    spec = importlib.util.spec_from_file_location("make_sft_data", ROOT / "scripts" / "make_sft_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def inputs():
    from deltatune.training.runner import prepare

    return prepare(load_recipe("sft", ["data.limit_train=16", "data.limit_eval=8", "task_options.show_samples=0"]))


ROWS = [{"prompt": "Reverse the words: red oak", "response": "oak red"},
        {"prompt": "Sort: 9 3", "response": "3 9"}]  # fmt: skip


def test_labels_cover_only_the_response_and_its_end(inputs) -> None:
    task, tok = inputs.task, inputs.task.tokenizer
    batch = task.collate(ROWS)
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "reverse", "the", "words", ":", "red", "oak", "[SEP]",
                                              "oak", "red", "[SEP]"]  # fmt: skip
    assert labels == [IGNORE] * 8 + tok.convert_tokens_to_ids(["oak", "red", "[SEP]"])
    # the shorter row is padded on the right, its padding ignored
    assert batch["attention_mask"][1].tolist() == [1] * 9 + [0, 0] and batch["labels"][1, -1] == IGNORE
    assert task.count(batch) == 3 + 3  # target tokens: response + end token per row


def test_loss_is_summed_over_target_tokens(inputs) -> None:
    """loss_sum / count equals transformers' own causal-LM loss (mean over the non-ignored shifted labels)."""
    torch.manual_seed(0)
    model = inputs.setup.load_model().eval()
    batch = inputs.task.collate(ROWS)
    with torch.no_grad():
        ours = inputs.task.loss_sum(model, batch) / inputs.task.count(batch)
        reference = model(**batch).loss
    assert float(ours) == pytest.approx(float(reference), rel=1e-5)


class Oracle(nn.Module):
    """A stand-in LM that predicts each prompt's known answer (wrong where ``answers`` says so)."""

    def __init__(self, task, answers: dict[tuple[int, ...], list[int]], vocab: int):
        super().__init__()
        self.task, self.answers, self.vocab = task, answers, vocab
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, position_ids=None):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        for b in range(input_ids.shape[0]):
            row = [int(t) for t, m in zip(input_ids[b], attention_mask[b], strict=True) if m]
            pad = len(input_ids[b]) - len(row) if not attention_mask[b, 0] else 0  # left padding's width
            prompt_len = row.index(self.task.eos) + 1
            target = self.answers[tuple(row[:prompt_len])]
            for i in range(prompt_len - 1, len(row)):
                k = i - prompt_len + 1
                logits[b, pad + i, target[k] if k < len(target) else self.task.eos] = 1.0
        return type("Out", (), {"logits": logits})()


def test_exact_match_and_token_accuracy_by_hand(inputs) -> None:
    task, tok = inputs.task, inputs.task.tokenizer
    prompts = [task.pieces(r)[0] for r in ROWS]
    right = task.pieces(ROWS[0])[1]  # oak red [SEP]
    wrong = tok.convert_tokens_to_ids(["3", "3"]) + [task.eos]  # "3 3": 1 of 3 targets wrong
    model = Oracle(task, {tuple(prompts[0]): right, tuple(prompts[1]): wrong}, len(tok))
    metrics = task.evaluate(model, ROWS, batch_size=2)
    assert metrics["exact_match"] == 0.5  # row 1 generates "oak red", row 2 "3 3"
    assert metrics["token_accuracy"] == pytest.approx(5 / 6)
    # logits 1 on the predicted token, 0 elsewhere: -log(e / (e + V - 1)) where right, -log(1 / (e + V - 1)) not
    v = len(tok)
    hit, miss = -math.log(math.e / (math.e + v - 1)), -math.log(1 / (math.e + v - 1))
    assert metrics["loss"] == pytest.approx((5 * hit + miss) / 6)
    assert task.predict(model, [{"prompt": ROWS[0]["prompt"]}], 1) == [{"response": "oak red"}]


def test_batched_generation_equals_one_row_at_a_time(inputs, monkeypatch) -> None:
    """Left padding and position ids make a batch generate what each prompt generates alone."""
    torch.manual_seed(0)
    model = inputs.setup.load_model().eval()
    monkeypatch.setattr(inputs.task.options, "max_new_tokens", 5)
    prompts = [inputs.task.prompt_ids(r) for r in [*ROWS, *inputs.valid[:2]]]
    assert len({len(p) for p in prompts}) > 1
    with torch.no_grad():
        batched = inputs.task.generate(model, prompts)
        single = [inputs.task.generate(model, [p])[0] for p in prompts]
    assert batched == single and all(len(g) <= inputs.task.options.max_new_tokens for g in batched)


def test_config_models(tmp_path: Path, inputs) -> None:
    tok = inputs.task.tokenizer
    cfg = model_config("config:tiny-llama", len(tok), tok)
    assert cfg.model_type == "llama" and cfg.vocab_size == len(tok) and cfg.eos_token_id == tok.sep_token_id
    path = tmp_path / "gpt2.json"
    path.write_text(json.dumps({"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2}))
    assert model_config(f"config:{path}", 50, tok).n_embd == 32
    with pytest.raises(ModelPathError, match="no config named 'nope'.*config:tiny-llama"):
        model_config("config:nope", 50, tok)
    path.write_text(json.dumps({"n_layer": 1}))
    with pytest.raises(ModelPathError, match="needs a model_type"):
        model_config(f"config:{path}", 50, tok)


def test_a_row_missing_a_field_names_file_and_line(tmp_path: Path) -> None:
    from deltatune.training.runner import prepare

    bad = tmp_path / "train.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({"prompt": "Sort these numbers: 2 1"}) + "\n")
    recipe = load_recipe("sft", [f"data.train_file={bad}", f"output.dir={tmp_path / 'run'}"])
    with pytest.raises(DataError, match=r"train.jsonl, line 2: the row has no \['response'\]"):
        prepare(recipe)
    assert not (tmp_path / "run").exists()


def test_sft_recipe_smoke(tmp_path: Path, capsys) -> None:
    """The shipped recipe for a few steps: the baseline is the untrained model; embeddings and head are saved."""
    from safetensors import safe_open

    from deltatune.training import run_recipe

    out = tmp_path / "run"
    recipe = load_recipe(
        "sft",
        [f"output.dir={out}", "train.max_steps=3", "train.batch_size=8", "data.limit_train=24",
         "data.limit_eval=6", "eval.every=3", "output.progress=false", "train.num_threads=1"],
    )  # fmt: skip
    results = run_recipe(recipe)
    assert results["metrics"] == ["exact_match", "token_accuracy"]
    assert results["baseline"]["name"] == "untrained model" and results["baseline"]["trainable_params"] == 0
    assert results["adapted"]["steps"] == 3 and math.isfinite(results["adapted"]["loss"])
    assert "  sample: " in capsys.readouterr().out  # generations shown at each evaluation
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    samples = [r["samples"] for r in logged if "samples" in r]  # ... and written into the log
    assert samples and all(set(s) == {"prompt", "generated", "reference"} for s in samples[-1])
    with safe_open(str(out / "adapter" / "adapter_model.safetensors"), "pt") as fh:
        keys = set(fh.keys())
    assert "base_model.model.model.embed_tokens.weight" in keys and "base_model.model.lm_head.weight" in keys
    assert any(k.endswith("mlp.down_proj.lora_A.weight") for k in keys)

    # `deltatune merge` of the run: a plain model folder with the task's own tokenizer beside it.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from deltatune.cli.main import main
    from deltatune.cli.runs import open_target

    assert main(["merge", str(out), str(tmp_path / "merged")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    opened = open_target(str(out), None, [])
    assert tokenizer.get_vocab() == opened.setup.task.tokenizer.get_vocab()  # type: ignore[attr-defined]
    ids = torch.tensor([tokenizer("Sort these numbers: 3 1 2")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, opened.model(input_ids=ids).logits, atol=1e-4, rtol=0)


def test_generator_is_deterministic_and_matches_the_bundled_files(tmp_path: Path) -> None:
    gen = _generator()
    first = gen.generate()
    assert first == gen.generate() and gen.generate(seed=1) != first
    gen.write(first, tmp_path)
    bundled = ROOT / "src" / "deltatune" / "data" / "sft"
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl", "vocab.txt"):
        assert (tmp_path / name).read_bytes() == (bundled / name).read_bytes()
        assert (bundled / name).stat().st_size < 600_000
    prompts = [r["prompt"] for rows in first.values() for r in rows]
    assert len(set(prompts)) == len(prompts)  # no prompt in two splits
