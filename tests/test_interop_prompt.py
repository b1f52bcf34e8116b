"""Prompt learning against real PEFT: checkpoints load both ways with the same logits and greedy tokens."""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable

import peft
import pytest
import torch
from safetensors.torch import load_file
from tests.models import tiny_bert_cls, tiny_llama
from torch import nn

import deltatune as dt


def tiny_gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64))


def tiny_t5() -> nn.Module:
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, decoder_start_token_id=0)
    return T5ForConditionalGeneration(cfg)


def tiny_bart() -> nn.Module:
    from transformers import BartConfig, BartForConditionalGeneration

    cfg = BartConfig(
        vocab_size=64,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=48,
        decoder_ffn_dim=48,
        max_position_embeddings=64,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
    )
    return BartForConditionalGeneration(cfg)


MODELS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "llama": (tiny_llama, "CAUSAL_LM"),
    "gpt2": (tiny_gpt2, "CAUSAL_LM"),
    "bert": (tiny_bert_cls, "SEQ_CLS"),
    "t5": (tiny_t5, "SEQ_2_SEQ_LM"),
    "bart": (tiny_bart, "SEQ_2_SEQ_LM"),
}
# (name, deltatune config class, peft config class, extra fields)
METHODS = [
    ("prompt", dt.PromptTuningConfig, peft.PromptTuningConfig, {}),
    ("ptuning_mlp", dt.PromptEncoderConfig, peft.PromptEncoderConfig, {"encoder_hidden_size": 16}),
    ("ptuning_lstm", dt.PromptEncoderConfig, peft.PromptEncoderConfig, {"encoder_reparameterization_type": "LSTM"}),
    ("prefix", dt.PrefixTuningConfig, peft.PrefixTuningConfig, {}),
    ("prefix_proj", dt.PrefixTuningConfig, peft.PrefixTuningConfig, {"prefix_projection": True}),
    ("multitask", dt.MultitaskPromptTuningConfig, peft.MultitaskPromptTuningConfig, {"num_tasks": 3, "num_ranks": 2}),
]
CASES = [
    pytest.param(model, method, id=f"{model}-{method[0]}")
    for model in MODELS
    for method in METHODS
    # BERT has no KV cache argument on its head models in PEFT's eyes (PEFT refuses prefix tuning there).
    if not (model == "bert" and method[0].startswith("prefix"))
]


def _inputs(model: str, method: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 60, (2, 6), generator=g)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if model in ("t5", "bart"):
        # PEFT's multitask forward on encoder-decoder models needs labels (or decoder embeddings): given
        # decoder_input_ids alone it fails, putting the decoder half of the prompt before embeddings it never made.
        key = "labels" if method == "multitask" else "decoder_input_ids"
        out[key] = torch.randint(1, 60, (2, 4), generator=g)
    return out


def _randomize(params: list[nn.Parameter]) -> None:
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def _run(model: nn.Module, x: dict[str, torch.Tensor], task_ids: torch.Tensor | None) -> torch.Tensor:
    extra = {} if task_ids is None else {"task_ids": task_ids}
    with torch.no_grad():
        out = model(**x, **extra)
    return out.logits if out.get("loss") is None else torch.cat([out.logits.flatten(), out.loss.reshape(1)])


def _greedy(model: nn.Module, x: dict[str, torch.Tensor], steps: int, task_ids: torch.Tensor | None) -> torch.Tensor:
    """Greedy decoding by full recomputation with the model's forward (no KV cache): the reference."""
    extra = {} if task_ids is None else {"task_ids": task_ids}
    if "decoder_input_ids" in x or "labels" in x:
        base = model.get_base_model()
        seq = torch.full((x["input_ids"].shape[0], 1), int(base.config.decoder_start_token_id))
        for _ in range(steps):
            # multitask: decoder embeddings, since PEFT's forward cannot take decoder_input_ids there
            decoder = (
                {"decoder_input_ids": seq}
                if task_ids is None
                else {"decoder_inputs_embeds": base.get_input_embeddings()(seq)}
            )
            with torch.no_grad():
                logits = model(input_ids=x["input_ids"], attention_mask=x["attention_mask"], **decoder, **extra).logits
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], 1)
        return seq
    seq, mask = x["input_ids"], x["attention_mask"]
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=seq, attention_mask=mask, **extra).logits
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return seq


@pytest.mark.parametrize("model_name,method", CASES)
def test_peft_and_deltatune_checkpoints_load_both_ways(model_name, method, tmp_path) -> None:
    make, task = MODELS[model_name]
    name, ours_cls, peft_cls, extra = method
    torch.manual_seed(0)
    base = make().eval()
    if getattr(base, "generation_config", None) is not None:  # no early stop: compare all greedy tokens
        base.generation_config.eos_token_id = None
    x = _inputs(model_name, name)
    task_ids = torch.tensor([2, 0]) if name == "multitask" else None

    # PEFT -> deltatune
    theirs = peft.get_peft_model(copy.deepcopy(base), peft_cls(task_type=task, num_virtual_tokens=3, **extra)).eval()
    _randomize([p for p in theirs.parameters() if p.requires_grad])
    theirs.save_pretrained(tmp_path / "peft")
    ours = dt.DeltaModel.from_pretrained(copy.deepcopy(base), tmp_path / "peft").eval()
    torch.testing.assert_close(_run(ours, x, task_ids), _run(theirs, x, task_ids), atol=1e-5, rtol=0)

    # deltatune -> PEFT
    mine = dt.wrap(copy.deepcopy(base), ours_cls(task_type=task, num_virtual_tokens=3, **extra)).eval()
    _randomize([p for p in mine.parameters() if p.requires_grad])
    mine.save_pretrained(tmp_path / "ours")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        peft.PeftConfig.from_pretrained(str(tmp_path / "ours"))
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ours").eval()
    expected = _run(mine, x, task_ids)
    torch.testing.assert_close(_run(loaded, x, task_ids), expected, atol=1e-5, rtol=0)
    assert set(load_file(tmp_path / "ours" / "adapter_model.safetensors")) == set(
        load_file(tmp_path / "peft" / "adapter_model.safetensors")
    )
    saved = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    assert saved["peft_type"] == ours_cls.peft_type and saved["num_virtual_tokens"] == 3
    assert "target_modules" not in saved

    # greedy tokens: deltatune's generate (KV cache) == greedy decoding on PEFT's forward (no cache)
    if task in ("CAUSAL_LM", "SEQ_2_SEQ_LM"):
        gen_x = {k: v for k, v in x.items() if k not in ("decoder_input_ids", "labels")}
        extra_gen = {} if task_ids is None else {"task_ids": task_ids}
        with torch.no_grad():
            tokens = mine.generate(**gen_x, max_new_tokens=5, do_sample=False, **extra_gen)
        reference = _greedy(loaded, x, 5, task_ids)
        assert torch.equal(tokens[:, -5:], reference[:, -5:])
        if task == "CAUSAL_LM":
            assert torch.equal(tokens, reference)
