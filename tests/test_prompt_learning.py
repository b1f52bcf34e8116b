"""Each prompt method learns: a few dozen steps on a synthetic task reduce the loss clearly."""

from __future__ import annotations

import pytest
import torch
from tests.test_prompt_methods import CONFIGS, _task

import deltatune as dt


@pytest.mark.parametrize("name", ["prompt", "ptuning_mlp", "prefix", "multitask"])
def test_learning_reduces_the_loss(name: str) -> None:
    """After any input, predict token 7: only the prompt can learn it (the base model is frozen)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        initializer_range=0.2,  # weights large enough for a prompt to steer the output in few steps
    )
    model = dt.wrap(LlamaForCausalLM(config), CONFIGS[name]()).train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.08)
    g = torch.Generator().manual_seed(3)
    losses = []
    for _ in range(80):
        ids = torch.cat([torch.randint(10, 60, (8, 4), generator=g), torch.full((8, 1), 7)], 1)
        labels = torch.full_like(ids, -100)
        labels[:, -1] = 7
        loss = model(input_ids=ids, labels=labels, **_task(name, 8)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.6 * first, (first, last)
