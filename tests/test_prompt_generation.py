"""Prompt adapters and positions: left-padded batches, and encoder-decoder multitask generate.

transformers' ``generate`` computes position ids from the attention mask (pads are skipped), while a
plain forward without ``position_ids`` counts every position, pads included. With a prompt or
prefix, deltatune keeps both rules, shifted by the ``n`` virtual tokens: so a left-padded batch
generates, per row, the tokens that row generates alone, and a forward given the mask's positions
gives, per row, the logits of that row alone.

PEFT 0.21.2 (with transformers 5.x) differs here: its prompt tuning / P-tuning drop any position_ids
(with a warning) and its prefix-tuned generate loses the prefix (the cache it builds is passed under
a name the model no longer reads), so its batched left-padded generate is not per-row equal to
unpadded generate; these tests therefore check deltatune against itself, not against PEFT.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from tests.models import tiny_llama
from tests.test_interop_prompt import tiny_gpt2, tiny_t5
from torch import nn

import deltatune as dt

CONFIGS: dict[str, Callable[[], dt.PromptLearningConfig]] = {
    "prompt": lambda: dt.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
    "prefix": lambda: dt.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
}
MODELS: dict[str, Callable[[], nn.Module]] = {"llama": tiny_llama, "gpt2": tiny_gpt2}


def _adapted(make: Callable[[], nn.Module], config: dt.PromptLearningConfig) -> dt.DeltaModel:
    torch.manual_seed(0)
    base = make().eval()
    base.generation_config.eos_token_id = None  # all new tokens are compared
    base.generation_config.pad_token_id = 0
    model = dt.wrap(base, config).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.adapter_parameters("default"):
            p.copy_(torch.randn(p.shape, generator=g))  # a prompt strong enough to change the tokens
    return model


def _left_padded(lengths: tuple[int, ...]) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(1, 60, (n,), generator=g) for n in lengths]
    width = max(lengths)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = row
        mask[i, width - len(row) :] = 1
    return rows, ids, mask


@pytest.mark.parametrize("method", list(CONFIGS))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_left_padded_batch_generates_per_row_what_the_row_generates_alone(model_name: str, method: str) -> None:
    model = _adapted(MODELS[model_name], CONFIGS[method]())
    rows, ids, mask = _left_padded((6, 3, 5))
    with torch.no_grad():
        batched = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
        for i, row in enumerate(rows):
            alone = model.generate(input_ids=row[None], max_new_tokens=6, do_sample=False)
            assert torch.equal(batched[i, -6:], alone[0, -6:]), (i, batched[i], alone[0])
        last = model(input_ids=ids, attention_mask=mask).logits[:, -1]
        with model.disable_adapters():  # the adapter does act
            assert not torch.allclose(model(input_ids=ids, attention_mask=mask).logits[:, -1], last, atol=1e-3)


@pytest.mark.parametrize("method", list(CONFIGS))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_left_padded_forward_follows_the_plain_models_positions(model_name: str, method: str) -> None:
    model = _adapted(MODELS[model_name], CONFIGS[method]())
    rows, ids, mask = _left_padded((6, 3, 5))
    width = ids.shape[1]
    from_mask = (mask.cumsum(-1) - 1).clamp(min=0)  # generate's rule: pads skipped
    with torch.no_grad():
        # Given the mask's positions (as generate passes them), each row gives its logits alone.
        padded = model(input_ids=ids, attention_mask=mask, position_ids=from_mask).logits
        for i, row in enumerate(rows):
            alone = model(input_ids=row[None]).logits[0]
            torch.testing.assert_close(padded[i, -len(row) :], alone[-len(row) :], atol=1e-5, rtol=0)
        # Without position_ids, the plain model's forward rule: every position counts, pads included.
        default = model(input_ids=ids, attention_mask=mask).logits
        counted = model(input_ids=ids, attention_mask=mask, position_ids=torch.arange(width).expand(3, width)).logits
    torch.testing.assert_close(default, counted, atol=0, rtol=0)


def test_t5_multitask_generate_reads_the_decoder_prompts_with_beams() -> None:
    """Multitask prompts on T5 have a decoder half; beams and returned sequences keep each row's own prompts."""
    torch.manual_seed(0)
    base = tiny_t5().eval()
    base.generation_config.eos_token_id = None
    config = dt.MultitaskPromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3, num_tasks=2)
    model = dt.wrap(copy.deepcopy(base), config).eval()
    assert model.peft_config["default"].num_transformer_submodules == 2
    ids = torch.randint(1, 60, (2, 6), generator=torch.Generator().manual_seed(1))
    task_ids = torch.tensor([1, 0])
    options = dict(max_new_tokens=4, num_beams=3, num_return_sequences=2, do_sample=False)
    with torch.no_grad():
        beams = model.generate(input_ids=ids, task_ids=task_ids, **options)
        assert beams.shape == (4, 5)
        for i in range(2):
            alone = model.generate(input_ids=ids[i : i + 1], task_ids=task_ids[i : i + 1], **options)
            assert torch.equal(beams[2 * i : 2 * i + 2], alone)
        decoder_ids = torch.randint(1, 60, (2, 4), generator=torch.Generator().manual_seed(2))
        by_ids = model(input_ids=ids, task_ids=task_ids, decoder_input_ids=decoder_ids).logits
        by_embeds = model(input_ids=ids, task_ids=task_ids, decoder_inputs_embeds=base.shared(decoder_ids)).logits
        assert by_ids.shape[1] == 3 + 4  # the decoder's prompt rows, then its inputs
        torch.testing.assert_close(by_ids, by_embeds, atol=0, rtol=0)
        greedy = model.generate(input_ids=ids, task_ids=task_ids, max_new_tokens=4, do_sample=False)
        with model.disable_adapters():
            plain = model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    assert not torch.equal(greedy, plain)
