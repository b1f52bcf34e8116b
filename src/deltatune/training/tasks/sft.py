"""``sft``: supervised instruction tuning of a causal language model (prompt -> response).

A row's prompt and response become one sequence "[BOS] prompt [SEP] response [EOS]"; the loss
covers only the response and its end token (the prompt's labels are -100) and is summed over
those target tokens, so the loop averages it per target token. Evaluation reports the loss, the
teacher-forced token accuracy on the targets, and the exact match of greedy generation; a few
generated samples are printed at each evaluation and written into metrics.jsonl.

``model.path: config:<name or file>`` builds a randomly initialised model from a transformers
config (a name from :data:`CONFIGS`, or a JSON file holding ``model_type`` and the config's
fields) instead of loading weights; its vocabulary size is the tokenizer's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deltatune.training.errors import ModelPathError, RecipeError
from deltatune.training.tasks import (
    Baseline,
    Batch,
    Rows,
    TaskKind,
    TaskSetup,
    load_pretrained,
    load_tokenizer,
    register_task,
)

IGNORE = -100
# Small configs for ``model.path: config:<name>`` (vocab_size comes from the tokenizer).
CONFIGS: dict[str, dict[str, Any]] = {
    "tiny-llama": {"model_type": "llama", "hidden_size": 192, "intermediate_size": 512, "num_hidden_layers": 3,
                   "num_attention_heads": 6, "num_key_value_heads": 6, "max_position_embeddings": 256,
                   "tie_word_embeddings": False},
}  # fmt: skip


def model_config(spec: str, vocab_size: int, tokenizer: Any) -> Any:
    """A transformers config from ``config:<name>`` (:data:`CONFIGS`) or ``config:<file.json>``."""
    from transformers import AutoConfig

    name = spec.removeprefix("config:")
    if name in CONFIGS:
        values = dict(CONFIGS[name])
    elif Path(name).is_file():
        try:
            values = json.loads(Path(name).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelPathError(f"model.path {spec!r}: the config file is not valid JSON ({exc}).") from exc
    else:
        raise ModelPathError(
            f"model.path {spec!r}: no config named {name!r} and no such file; use one of "
            f"{', '.join(f'config:{n}' for n in CONFIGS)} or config:<path to a config JSON>."
        )
    model_type = values.pop("model_type", None)
    if not model_type:
        raise ModelPathError(f"model.path {spec!r}: the config needs a model_type (e.g. 'llama').")
    values.update(vocab_size=vocab_size, pad_token_id=tokenizer.pad_token_id,
                  bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)  # fmt: skip
    return AutoConfig.for_model(model_type, **values)


def wordpiece_tokenizer(vocab_file: Path) -> Any:
    """An uncased WordPiece tokenizer from a ``vocab.txt`` (one token a line)."""
    from transformers import BertTokenizer

    words = vocab_file.read_text(encoding="utf-8").splitlines()
    return BertTokenizer(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)


def resolve_tokenizer(spec: str, model_path: str, source: str) -> Any:
    """``bundled:<dataset>`` (its vocab.txt), a vocab.txt file, a tokenizer folder/Hub id/pkg:, or the model's."""
    if spec.startswith("bundled:"):
        from importlib import resources

        vocab = Path(str(resources.files("deltatune.data").joinpath(spec.removeprefix("bundled:"), "vocab.txt")))
        if not vocab.is_file():
            raise RecipeError(f"task_options.tokenizer {spec!r}: that bundled dataset has no vocab.txt.")
        return wordpiece_tokenizer(vocab)
    if spec.endswith(".txt"):
        if not Path(spec).is_file():
            raise RecipeError(f"task_options.tokenizer {spec!r} does not exist; give a vocab.txt file.")
        return wordpiece_tokenizer(Path(spec))
    if spec:
        from deltatune.training.runner import resolve_model_path

        return load_tokenizer(resolve_model_path(spec), spec)
    if model_path.startswith("config:"):
        raise RecipeError(f"model.path {source!r} builds a model from a config: set task_options.tokenizer.")
    return load_tokenizer(model_path, source)


class InstructionTuning:
    """Prompt -> response with a causal LM; loss and metrics on the response tokens only."""

    higher_is_better = frozenset({"exact_match", "token_accuracy"})
    metrics: tuple[str, ...] = ("exact_match", "token_accuracy")

    def __init__(self, tokenizer: Any, options: SftOptions, max_length: int):
        self.tokenizer = tokenizer
        self.options = options
        self.max_length = max_length
        self.pad = tokenizer.pad_token_id
        self.bos = tokenizer.cls_token_id if tokenizer.bos_token_id is None else tokenizer.bos_token_id
        self.eos = tokenizer.sep_token_id if tokenizer.eos_token_id is None else tokenizer.eos_token_id
        self.last_samples: list[dict[str, str]] = []

    def prompt_ids(self, row: dict[str, Any]) -> list[int]:
        """[BOS] prompt [SEP], keeping its end if longer than model.max_length."""
        ids = self.tokenizer.encode(str(row[self.options.prompt_field]), add_special_tokens=False)
        return [self.bos, *ids, self.eos][-self.max_length :]

    def pieces(self, row: dict[str, Any]) -> tuple[list[int], list[int]]:
        """Token ids of the prompt ([BOS] prompt [SEP]) and of the target (response [EOS])."""
        ids = self.tokenizer.encode(str(row[self.options.response_field]), add_special_tokens=False)
        target = [*ids, self.eos]
        room = self.max_length - len(target)
        if room < 2:
            raise RecipeError(f"model.max_length={self.max_length} leaves no room for a prompt; raise it.")
        return self.prompt_ids(row)[-room:], target  # a long prompt loses its start, never the response

    def collate(self, rows: Sequence[dict[str, Any]]) -> Batch:
        seqs = [self.pieces(r) for r in rows]
        width = max(len(p) + len(t) for p, t in seqs)
        ids = torch.full((len(rows), width), self.pad)
        labels = torch.full((len(rows), width), IGNORE)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (prompt, target) in enumerate(seqs):
            n = len(prompt) + len(target)
            ids[i, :n] = torch.tensor(prompt + target)
            labels[i, len(prompt) : n] = torch.tensor(target)
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def count(self, batch: Batch) -> int:
        return int((batch["labels"] != IGNORE).sum())

    @staticmethod
    def shifted(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits at each position and the label of the next token (the causal shift)."""
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        return logits[:, :-1], batch["labels"][:, 1:]

    def loss_sum(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        logits, labels = self.shifted(model, batch)
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum")

    def generate(self, model: nn.Module, prompts: list[list[int]]) -> list[list[int]]:
        """Greedy continuations (without the end token) of left-padded prompts, up to max_new_tokens."""
        device = next(model.parameters()).device
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad] * (width - len(p)) + p for p in prompts], device=device)
        mask = (torch.arange(width, device=device)[None, :] >= torch.tensor([width - len(p) for p in prompts],
                                                                           device=device)[:, None]).long()  # fmt: skip
        done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
        out: list[list[int]] = [[] for _ in prompts]
        for _ in range(self.options.max_new_tokens):
            positions = (mask.cumsum(1) - 1).clamp(min=0)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
            nxt = logits[:, -1].argmax(-1)
            for i in (~done).nonzero().flatten().tolist():
                if int(nxt[i]) != self.eos:
                    out[i].append(int(nxt[i]))
            done |= nxt == self.eos
            if bool(done.all()):
                break
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        return out

    def responses(self, model: nn.Module, rows: Rows, batch_size: int) -> list[list[int]]:
        out: list[list[int]] = []
        for start in range(0, len(rows), batch_size):
            out += self.generate(model, [self.prompt_ids(r) for r in rows[start : start + batch_size]])
        return out

    def evaluate(self, model: nn.Module, rows: Sequence[dict[str, Any]], batch_size: int) -> dict[str, float]:
        device = next(model.parameters()).device
        loss, correct, targets = 0.0, 0, 0
        for start in range(0, len(rows), batch_size):
            batch = {k: v.to(device) for k, v in self.collate(rows[start : start + batch_size]).items()}
            logits, labels = self.shifted(model, batch)
            keep = labels != IGNORE
            loss += float(F.cross_entropy(logits[keep], labels[keep], reduction="sum"))
            correct += int((logits.argmax(-1)[keep] == labels[keep]).sum())
            targets += int(keep.sum())
        generated = self.responses(model, list(rows), batch_size)
        wanted = [self.pieces(r)[1][:-1] for r in rows]
        exact = sum(g == w for g, w in zip(generated, wanted, strict=True))
        from tqdm.auto import tqdm

        self.last_samples = []  # printed, and written into metrics.jsonl by the loop
        for row, tokens in list(zip(rows, generated, strict=True))[: self.options.show_samples]:
            sample = {"prompt": row[self.options.prompt_field], "generated": self.tokenizer.decode(tokens),
                      "reference": row[self.options.response_field]}  # fmt: skip
            self.last_samples.append(sample)
            tqdm.write(f"  sample: {sample['prompt']!r} -> {sample['generated']!r} (want {sample['reference']!r})")
        return {
            "loss": loss / max(1, targets),
            "exact_match": exact / max(1, len(rows)),
            "token_accuracy": correct / max(1, targets),
        }

    def predict(self, model: nn.Module, rows: Rows, batch_size: int) -> list[dict[str, Any]]:
        """Per row: the greedy response."""
        return [{"response": self.tokenizer.decode(t)} for t in self.responses(model, rows, batch_size)]


@dataclass
class SftOptions:
    prompt_field: str = field(default="prompt", metadata={"help": "Row field holding the instruction (the prompt)."})
    response_field: str = field(default="response", metadata={"help": "Row field holding the wanted response."})
    tokenizer: str = field(
        default="",
        metadata={"help": "bundled:<dataset> (its vocab.txt), a vocab.txt, a tokenizer folder/Hub id/pkg:<module>; "
                          "empty = the model's own."},
    )  # fmt: skip
    max_new_tokens: int = field(default=16, metadata={"help": "Longest generated response at evaluation."})
    show_samples: int = field(
        default=3, metadata={"help": "Generated samples printed and logged (metrics.jsonl) at each evaluation."}
    )

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.show_samples < 0:
            raise ValueError(f"show_samples must be >= 0, got {self.show_samples}")
        if self.prompt_field == self.response_field:
            raise ValueError(f"prompt_field and response_field must differ, both are {self.prompt_field!r}")


def setup(recipe: Any, options: SftOptions, model_path: str) -> TaskSetup:
    from transformers import AutoModelForCausalLM

    tokenizer = resolve_tokenizer(options.tokenizer, model_path, recipe.model.path)
    if tokenizer.pad_token_id is None:
        raise RecipeError("The tokenizer has no pad token; choose one that has (task_options.tokenizer).")
    task = InstructionTuning(tokenizer, options, recipe.model.max_length)

    def load_model() -> nn.Module:
        if model_path.startswith("config:"):
            # Seeded by the runner, so the baseline and the adapted run start from the same weights.
            return AutoModelForCausalLM.from_config(model_config(model_path, len(tokenizer), tokenizer))
        return load_pretrained(AutoModelForCausalLM, model_path)

    return TaskSetup(
        task=task,
        required_fields=[options.prompt_field, options.response_field],
        input_fields=[options.prompt_field],
        load_model=load_model,
        adapter_task_type="CAUSAL_LM",
        baseline=Baseline("untrained model"),
        predict=task.predict,
    )


register_task(
    TaskKind(
        name="sft",
        summary="instruction tuning of a causal LM: prompt -> response, loss on the response tokens "
        "(exact match of greedy generation, token accuracy)",
        options_cls=SftOptions,
        setup=setup,
    )
)
