"""The prompt-learning family: its invariant matrix, learning, task types, checkpointing, lifecycle and errors."""

from __future__ import annotations

import copy

import pytest
import torch
from tests.models import MLP, tiny_bert_cls, tiny_llama
from torch import nn

import deltatune as dt

CONFIGS = {
    "prompt": lambda: dt.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
    "sample_vocab": lambda: dt.PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=4, prompt_tuning_init="SAMPLE_VOCAB"
    ),
    "ptuning_mlp": lambda: dt.PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, encoder_hidden_size=16),
    "ptuning_lstm": lambda: dt.PromptEncoderConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=4, encoder_reparameterization_type="LSTM", encoder_hidden_size=16
    ),
    "prefix": lambda: dt.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
    "prefix_proj": lambda: dt.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, prefix_projection=True),
    "multitask": lambda: dt.MultitaskPromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, num_tasks=2),
}


def _x(batch: int = 3, length: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, 60, (batch, length), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _task(name: str, batch: int = 3) -> dict[str, torch.Tensor]:
    return {"task_ids": torch.arange(batch) % 2} if name == "multitask" else {}


def _wrapped(name: str) -> tuple[nn.Module, dt.DeltaModel]:
    torch.manual_seed(0)
    base = tiny_llama().eval()
    return copy.deepcopy(base), dt.wrap(base, CONFIGS[name]()).eval()


# ------------------------------------------------------------------------------------------ matrix
@pytest.mark.parametrize("name", list(CONFIGS))
def test_disable_equals_base_and_adapter_changes_output(name: str) -> None:
    reference, model = _wrapped(name)
    x = _x()
    with torch.no_grad():
        base = reference(**x).logits
        adapted = model(**x, **_task(name)).logits
        with model.disable_adapters():
            disabled = model(**x).logits
    torch.testing.assert_close(disabled, base, atol=0, rtol=0)
    adapted = adapted[:, -base.shape[1] :]  # prompts before the input add positions to the output
    assert not torch.allclose(adapted, base, atol=1e-4)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_save_load_is_bit_exact(name: str, tmp_path) -> None:
    _, model = _wrapped(name)
    x = _x()
    with torch.no_grad():
        adapted = model(**x, **_task(name)).logits
    model.save_pretrained(tmp_path)
    torch.manual_seed(0)
    loaded = dt.DeltaModel.from_pretrained(tiny_llama(), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(**x, **_task(name)).logits, adapted)
    assert not any(p.requires_grad for p in loaded.parameters())
    resumed = dt.DeltaModel.from_pretrained(tiny_llama(), tmp_path, is_trainable=True).eval()
    ours = dict(model.prompt_by_adapter["default"].encoder.state_dict())
    for key, value in resumed.prompt_by_adapter["default"].encoder.state_dict().items():
        assert torch.equal(value, ours[key]), key  # the whole encoder is back: training can resume
    assert {k for k, p in resumed.named_parameters() if p.requires_grad} == {
        k for k, p in model.named_parameters() if p.requires_grad
    }


@pytest.mark.parametrize("name", list(CONFIGS))
def test_only_prompt_parameters_train(name: str) -> None:
    _, model = _wrapped(name)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and {id(p) for p in trainable} == {id(p) for p in model.adapter_parameters("default")}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    x = _x(4)
    model(**x, labels=x["input_ids"], **_task(name, 4)).loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


# ------------------------------------------------------------------------------------------ task types
def test_token_cls_qa_feature_extraction_and_seq_cls_prefix() -> None:
    from transformers import BertConfig, BertForQuestionAnswering, BertForTokenClassification, BertModel

    cfg = BertConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4)
    x = _x(2, 6)
    torch.manual_seed(0)
    tok = dt.wrap(BertForTokenClassification(cfg), dt.PromptTuningConfig(task_type="TOKEN_CLS", num_virtual_tokens=3))
    out = tok(**x, labels=torch.zeros(2, 6, dtype=torch.long), token_type_ids=torch.zeros_like(x["input_ids"]))
    assert out.logits.shape[1] == 9 and torch.isfinite(out.loss)  # labels got -100 for the virtual tokens
    qa = dt.wrap(BertForQuestionAnswering(cfg), dt.PromptEncoderConfig(task_type="QUESTION_ANS", num_virtual_tokens=3))
    out = qa(**x, start_positions=torch.tensor([1, 2]), end_positions=torch.tensor([3, 4]))
    assert out.start_logits.shape[1] == 9 and torch.isfinite(out.loss)
    feat = dt.wrap(BertModel(cfg), dt.PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=3))
    assert feat(**x).last_hidden_state.shape == (2, 9, 32)
    base = tiny_bert_cls().eval()
    reference = copy.deepcopy(base)
    cls = dt.wrap(base, dt.PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=3)).eval()
    with torch.no_grad():
        logits = cls(**x).logits
        assert logits.shape == (2, 3) and not torch.allclose(logits, reference(**x).logits)
    assert any(p.requires_grad for p in cls.model.classifier.parameters())  # the head trains (modules_to_save)


def test_seq2seq_labels_and_causal_position_ids() -> None:
    from tests.test_interop_prompt import tiny_t5

    t5 = dt.wrap(tiny_t5(), dt.PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3))
    out = t5(**_x(2, 6), labels=torch.randint(1, 60, (2, 4)))
    assert out.logits.shape[:2] == (2, 4) and torch.isfinite(out.loss)
    _, model = _wrapped("prompt")
    x = _x(2, 5)
    with torch.no_grad():
        default = model(**x).logits
        explicit = model(**x, position_ids=torch.arange(5).expand(2, 5)).logits
    torch.testing.assert_close(explicit, default, atol=1e-6, rtol=0)  # positions are extended for the prompt


def test_gradient_checkpointing_with_prefix_gives_the_same_gradients() -> None:
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        base = tiny_llama()
        if checkpointing:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = dt.wrap(base, dt.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).train()
        x = _x(2, 6)
        model(**x, labels=x["input_ids"]).loss.backward()
        grads.append([p.grad.clone() for p in model.adapter_parameters("default")])
    for plain, checkpointed in zip(*grads, strict=True):
        assert plain.abs().sum() > 0
        torch.testing.assert_close(checkpointed, plain, atol=1e-6, rtol=1e-5)


def test_beam_search_and_sampling_with_prefix() -> None:
    _, model = _wrapped("prefix")
    model.model.generation_config.eos_token_id = None
    x = _x(2, 5)
    greedy = model.generate(**x, max_new_tokens=4, do_sample=False)
    beams = model.generate(**x, max_new_tokens=4, num_beams=3, num_return_sequences=2, do_sample=False)
    assert beams.shape == (4, 9) and torch.equal(beams[::2, :5], x["input_ids"])
    one_beam = model.generate(**x, max_new_tokens=4, num_beams=1, do_sample=False)
    assert torch.equal(one_beam, greedy)
    sampled = model.generate(**x, max_new_tokens=3, do_sample=True, num_return_sequences=2)
    assert sampled.shape == (4, 8)


# ------------------------------------------------------------------------------------------ lifecycle
def test_lora_and_prompt_adapters_switch_by_name(tmp_path) -> None:
    reference, model = _wrapped("prefix")
    model.add_adapter("lora", dt.LoraConfig(target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    x = _x()
    with torch.no_grad():
        prefixed = model(**x).logits
        model.set_adapter("lora")
        lora = model(**x).logits
        model.set_adapter("default")
        again = model(**x).logits
    assert torch.equal(prefixed, again) and not torch.allclose(prefixed, lora, atol=1e-4)
    with pytest.raises(dt.DeltatuneError):
        model(**x, adapter_names=["default", "lora", "default"])
    with pytest.raises(dt.MergeError):
        model.merge_adapter(["default"])
    model.save_pretrained(tmp_path)
    model.delete_adapter("default")
    assert "default" not in model.prompt_by_adapter and model.active_adapters == []
    model.set_adapter("lora")
    with torch.no_grad():
        assert torch.equal(model(**x).logits, lora)
    model.load_adapter(tmp_path, "prefix_again")
    model.set_adapter("prefix_again")
    with torch.no_grad():
        torch.testing.assert_close(model(**x).logits, prefixed, atol=0, rtol=0)
    plain = model.unload()
    with torch.no_grad():
        torch.testing.assert_close(plain(**x).logits, reference(**x).logits, atol=0, rtol=0)


def test_text_init_uses_the_tokenizer(tmp_path) -> None:
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *[f"w{i}" for i in range(59)]]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path / "tok")
    config = dt.PromptTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=5,
        prompt_tuning_init="TEXT",
        prompt_tuning_init_text="w3 w7",
        tokenizer_name_or_path=str(tmp_path / "tok"),
    )
    base = tiny_llama()
    model = dt.wrap(base, config)
    ids = [2, 8, 12, 3, 2]  # [CLS] w3 w7 [SEP], repeated to fill 5 tokens
    rows = model.prompt_by_adapter["default"].encoder.embedding.weight
    assert torch.equal(rows, base.get_input_embeddings().weight[ids])


def test_p_tuning_from_a_peft_checkpoint_resumes_on_its_outputs(tmp_path) -> None:
    _, model = _wrapped("ptuning_mlp")
    model.save_pretrained(tmp_path)
    (tmp_path / "deltatune_prompt_encoder.safetensors").unlink()  # what PEFT writes: outputs only
    torch.manual_seed(0)  # the same base model as _wrapped
    with pytest.warns(UserWarning, match="resumes training on the saved prompt outputs"):
        resumed = dt.DeltaModel.from_pretrained(tiny_llama(), tmp_path, is_trainable=True)
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(resumed.eval()(**x).logits, model(**x).logits, atol=1e-6, rtol=0)
    assert all(p.requires_grad for p in resumed.adapter_parameters("default"))


def test_saving_without_an_encoder_removes_an_old_encoder_file(tmp_path) -> None:
    encoder_file = tmp_path / "deltatune_prompt_encoder.safetensors"
    _, trained = _wrapped("ptuning_mlp")
    trained.save_pretrained(tmp_path)
    assert encoder_file.is_file()
    (tmp_path / "notes.txt").write_text("kept")
    torch.manual_seed(0)
    inference = dt.DeltaModel.from_pretrained(tiny_llama(), tmp_path)  # outputs only: no encoder to keep
    with torch.no_grad():
        inference.prompt_by_adapter["default"].encoder.embedding.weight.mul_(2.0)  # new outputs, old encoder
    inference.save_pretrained(tmp_path)
    assert not encoder_file.exists() and (tmp_path / "notes.txt").read_text() == "kept"
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="resumes training on the saved prompt outputs"):
        resumed = dt.DeltaModel.from_pretrained(tiny_llama(), tmp_path, is_trainable=True)  # not the stale encoder
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(resumed.eval()(**x).logits, inference(**x).logits, atol=0, rtol=0)

    other = tmp_path / "other"
    _wrapped("ptuning_mlp")[1].save_pretrained(other)  # an encoder that did not make these outputs, copied in
    (other / "deltatune_prompt_encoder.safetensors").rename(encoder_file)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="does not produce the prompt_embeddings"):
        dt.DeltaModel.from_pretrained(tiny_llama(), tmp_path, is_trainable=True)

    trained.save_pretrained(tmp_path)  # prompt tuning saved over a P-tuning folder
    _wrapped("prompt")[1].save_pretrained(tmp_path)
    assert not encoder_file.exists()
    encoder_file.write_bytes(b"not ours")  # a file we did not write stays, with a warning
    with pytest.warns(UserWarning, match="Left .* in place"):
        _wrapped("prompt")[1].save_pretrained(tmp_path)
    assert encoder_file.read_bytes() == b"not ours"


# ------------------------------------------------------------------------------------------ bad input
def test_bad_input_raises_clear_errors(tmp_path) -> None:
    with pytest.raises(dt.ConfigError, match="transformers model"):
        dt.wrap(MLP(), dt.PromptTuningConfig(num_virtual_tokens=3))

    class NoCache(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = tiny_llama().config
            self.embed = nn.Embedding(64, 32)

        def get_input_embeddings(self) -> nn.Module:
            return self.embed

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.embed(input_ids)

    with pytest.raises(dt.ConfigError, match="KV cache"):
        dt.wrap(NoCache(), dt.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    with pytest.raises(dt.ConfigError, match="tokenizer"):
        dt.PromptTuningConfig(num_virtual_tokens=3, prompt_tuning_init="TEXT", prompt_tuning_init_text="hi")
    with pytest.raises(dt.ConfigError, match="max_position_embeddings"):
        dt.wrap(tiny_llama(), dt.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=64))
    with pytest.raises(dt.ConfigError, match="num_virtual_tokens"):
        dt.PromptTuningConfig(num_virtual_tokens=0)
    with pytest.raises(dt.ConfigError, match="does not adapt layers"):
        dt.PrefixTuningConfig(num_virtual_tokens=3, target_modules=["q_proj"])
    with pytest.raises(dt.ConfigError, match="task_ids"):
        _wrapped("multitask")[1](**_x())

    _, model = _wrapped("prompt")
    model.save_pretrained(tmp_path)
    with pytest.raises(dt.CheckpointError, match="num_virtual_tokens"):
        config = dt.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=6)
        dt.DeltaModel.from_pretrained(tiny_llama(), tmp_path, config=config)
    with pytest.raises(dt.ConfigError, match="hidden size"):
        from transformers import LlamaConfig, LlamaForCausalLM

        wider = LlamaForCausalLM(
            LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4)
        )
        dt.DeltaModel.from_pretrained(wider, tmp_path)
