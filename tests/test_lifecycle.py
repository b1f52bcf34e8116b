"""The adapter lifecycle on a DeltaModel: add, switch, stack, delete, unload, save/load, generate."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from tests.models import MLP, tiny_bert_cls, tiny_llama

import deltatune as dt


def _llama(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return tiny_llama().eval()


def _cfg(targets=("q_proj", "v_proj"), **kw) -> dt.LoraConfig:
    return dt.LoraConfig(target_modules=list(targets), init_lora_weights=False, **kw)


IDS = torch.randint(1, 64, (2, 6), generator=torch.Generator().manual_seed(1))


def test_several_active_adapters_add_up() -> None:
    base = _llama()
    ref = copy.deepcopy(base)
    model = dt.wrap(base, _cfg(["q_proj"]))
    model.add_adapter("b", _cfg(["q_proj"], r=2))
    out = {}
    for names in (["default"], ["b"], ["default", "b"]):
        model.set_adapter(names)
        out[tuple(names)] = model(IDS).logits
    assert model.active_adapters == ["default", "b"] and model.active_adapter == "default"
    # On a single linear layer LoRA deltas add: check against merged weights of both.
    model.merge_adapter(["default", "b"])
    torch.testing.assert_close(model(IDS).logits, out[("default", "b")], atol=1e-5, rtol=1e-5)
    model.unmerge_adapter()  # subtracting the delta again restores the weights up to rounding
    with model.disable_adapters():
        torch.testing.assert_close(model(IDS).logits, ref(IDS).logits, atol=1e-6, rtol=0)


def test_only_active_adapters_train() -> None:
    model = dt.wrap(_llama(), _cfg())
    model.add_adapter("b", _cfg(["k_proj"]))
    a_params = {id(p) for p in model.adapter_parameters("default")}
    b_params = {id(p) for p in model.adapter_parameters("b")}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == a_params
    model.set_adapter("b")
    assert {id(p) for p in model.parameters() if p.requires_grad} == b_params
    model.set_adapter(["default", "b"])
    assert {id(p) for p in model.parameters() if p.requires_grad} == a_params | b_params


def test_delete_adapter_restores_plain_modules() -> None:
    base = _llama()
    ref = copy.deepcopy(base)
    model = dt.wrap(base, _cfg())
    model.add_adapter("b", _cfg(["k_proj"]))
    model.delete_adapter("default")
    assert model.active_adapters == [] and list(model.peft_config) == ["b"]
    assert all("k_proj" in n for n, _ in model.adapted_layers())
    torch.testing.assert_close(model(IDS).logits, ref(IDS).logits, atol=0, rtol=0)
    with pytest.raises(dt.AdapterNameError):
        model.set_adapter("default")


def test_unload_returns_original_model() -> None:
    base = _llama()
    ref = copy.deepcopy(base)
    model = dt.wrap(base, _cfg())
    model.merge_adapter()
    plain = model.unload()
    assert type(plain).__name__ == "LlamaForCausalLM"
    assert not any(isinstance(m, dt.AdaptedLayer) for m in plain.modules())
    torch.testing.assert_close(plain(IDS).logits, ref(IDS).logits, atol=1e-5, rtol=1e-5)


def test_modules_to_save_trains_a_copy_and_merge_and_unload_keeps_it() -> None:
    torch.manual_seed(0)
    model = dt.wrap(tiny_bert_cls().eval(), _cfg(["query"], task_type="SEQ_CLS"))
    head = dict(model.saved_modules())["classifier"]
    with torch.no_grad():
        head.modules_to_save["default"].weight.add_(1.0)
    out = model(IDS).logits
    with model.disable_adapters():
        base_out = model(IDS).logits
    assert not torch.allclose(out, base_out)
    plain = model.merge_and_unload()
    torch.testing.assert_close(plain(IDS).logits, out, atol=1e-5, rtol=1e-5)


def test_mixed_batch_with_modules_to_save(tmp_path) -> None:
    torch.manual_seed(0)
    base = tiny_bert_cls().eval()
    ref = copy.deepcopy(base)
    model = dt.wrap(base, _cfg(["query", "value"], task_type="SEQ_CLS"))
    model.add_adapter("b", _cfg(["query"], task_type="SEQ_CLS", r=3))
    for _, wrapper in model.saved_modules():
        with torch.no_grad():
            wrapper.modules_to_save["b"].weight.mul_(-2)
    expected = []
    for name in ["b", "default", dt.BASE]:
        if name == dt.BASE:
            expected.append(ref(IDS[:1]).logits)
            continue
        model.set_adapter(name)
        expected.append(model(IDS[:1]).logits)
    ids = IDS[:1].repeat(3, 1)
    mixed = model(ids, adapter_names=["b", "default", dt.BASE]).logits
    torch.testing.assert_close(mixed, torch.cat(expected), atol=1e-5, rtol=1e-5)


def test_bias_modes_choose_trainable_biases() -> None:
    torch.manual_seed(0)
    model = dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin0"], bias="lora_only"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "model.lin0.base_layer.bias" in trainable and "model.lin1.bias" not in trainable
    model = dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin0"], bias="all"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"model.lin0.base_layer.bias", "model.lin1.bias"} <= trainable


def test_bias_is_saved_and_loaded(tmp_path) -> None:
    torch.manual_seed(0)
    model = dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin0"], bias="all", init_lora_weights=False))
    with torch.no_grad():
        model.model.lin1.bias.add_(3.0)
    model.save_pretrained(tmp_path)
    torch.manual_seed(0)
    loaded = dt.DeltaModel.from_pretrained(MLP(), tmp_path)
    x = torch.randn(2, 10)
    assert torch.equal(loaded(x), model.eval()(x))


def test_trainable_parameter_report(capsys) -> None:
    model = dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin0"], r=2))
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == 2 * 10 + 20 * 2
    assert total == sum(p.numel() for p in MLP().parameters()) + trainable
    model.print_trainable_parameters()
    assert f"trainable params: {trainable:,d} || all params: {total:,d}" in capsys.readouterr().out


def test_two_adapters_in_one_folder(tmp_path) -> None:
    model = dt.wrap(_llama(), _cfg())
    model.add_adapter("other", _cfg(["k_proj"], r=2))
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["README.md", "adapter_config.json", "adapter_model.safetensors", "other"]
    loaded = dt.DeltaModel.from_pretrained(_llama(), tmp_path)
    loaded.load_adapter(tmp_path / "other", adapter_name="other")
    loaded.load_adapter(tmp_path, adapter_name="other2", subfolder="other")
    for name in ("default", "other"):
        model.set_adapter(name)
        loaded.set_adapter(name)
        assert torch.equal(loaded(IDS).logits, model(IDS).logits)
    loaded.set_adapter("other2")
    assert torch.equal(loaded(IDS).logits, model(IDS).logits)
    model.save_pretrained(tmp_path / "only", selected_adapters=["other"])
    assert os.listdir(tmp_path / "only") == ["other"]


def test_model_attributes_and_generate_pass_through() -> None:
    base = _llama()
    ref = copy.deepcopy(base)
    model = dt.wrap(base, dt.LoraConfig(target_modules=["q_proj"]))
    assert model.config is base.config
    kwargs = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(model.generate(IDS, **kwargs), ref.generate(IDS, **kwargs))


def test_mixed_batch_generate_with_beams() -> None:
    model = dt.wrap(_llama(), _cfg(["q_proj", "v_proj"]))
    model.add_adapter("b", _cfg(["q_proj"], r=2))
    kwargs = {"max_new_tokens": 3, "min_new_tokens": 3, "do_sample": False, "num_beams": 2, "pad_token_id": 0}
    expected = []
    for i, name in enumerate(["b", "default"]):
        model.set_adapter(name)
        expected.append(model.generate(IDS[i : i + 1], **kwargs))
    mixed = model.generate(IDS, adapter_names=["b", "default"], **kwargs)
    assert torch.equal(mixed, torch.cat(expected))


def test_injection_on_meta_device_allocates_nothing() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        base = LlamaForCausalLM(
            LlamaConfig(
                hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4, vocab_size=128
            )
        )
    model = dt.wrap(base, dt.LoraConfig(target_modules="all-linear", r=8))
    assert all(p.device.type == "meta" for p in model.parameters())
    assert len(list(model.adapted_layers())) == 14


def test_bf16_base_keeps_fp32_adapters() -> None:
    base = _llama().to(torch.bfloat16)
    model = dt.wrap(base, _cfg())
    assert all(p.dtype == torch.float32 for p in model.adapter_parameters("default"))
    out = model(IDS).logits
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    model.merge_adapter()
    torch.testing.assert_close(model(IDS).logits.float(), out.float(), atol=0.1, rtol=0.05)


def test_adapter_added_to_an_eval_model_starts_in_eval_mode() -> None:
    model = dt.wrap(_llama(), dt.LoraConfig(target_modules=["q_proj"], lora_dropout=0.5, init_lora_weights=False))
    model.eval()
    model.add_adapter("b", dt.LoraConfig(target_modules=["q_proj"], lora_dropout=0.5, init_lora_weights=False))
    model.set_adapter("b")
    assert not any(m.training for m in model.modules())
    assert torch.equal(model(IDS).logits, model(IDS).logits)  # no dropout in eval


def test_disable_adapters_nests_and_survives_errors() -> None:
    """An inner block leaves the outer one disabled; an exception inside restores the state."""
    model = dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin0"], init_lora_weights=False))
    x = torch.randn(3, 10)
    adapted = model(x)
    with model.disable_adapters():
        base = model(x)
        with model.disable_adapters():
            torch.testing.assert_close(model(x), base)
        torch.testing.assert_close(model(x), base)  # still the base model after the inner block
    torch.testing.assert_close(model(x), adapted)
    with pytest.raises(ValueError, match="boom"), model.disable_adapters():
        raise ValueError("boom")
    torch.testing.assert_close(model(x), adapted)
