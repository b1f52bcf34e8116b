"""Interop with Hugging Face PEFT for LoRA variants: DoRA, PiSSA/OLoRA (and their conversion to plain LoRA),
LoRA+ parameter groups.

Both directions for each case: a model built and randomized by one library, saved, loaded by the other
on a fresh copy of the same seeded base, must give the same outputs (atol 1e-5); the safetensors key
sets of both saves are equal; ``PeftConfig.from_pretrained`` reads our config without warnings.
PEFT is only imported here, as the reference implementation.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.models import MLP, ConvModel, EmbeddingModel

import deltatune as dt

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
from safetensors import safe_open  # noqa: E402

ATOL = 1e-5
VOCAB = 64


def _seeded(build: Callable[[], torch.nn.Module]) -> Callable[[], torch.nn.Module]:
    def make() -> torch.nn.Module:
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return build().eval()

    return make


def _llama() -> torch.nn.Module:
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        attention_bias=True,
    )
    return transformers.LlamaForCausalLM(cfg)


def _gpt2() -> torch.nn.Module:
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    return transformers.GPT2LMHeadModel(cfg)


def _ids() -> torch.Tensor:
    return torch.randint(1, VOCAB, (2, 7), generator=torch.Generator().manual_seed(1))


MODELS: dict[str, tuple[Callable[[], torch.nn.Module], Callable[[], Any]]] = {
    "mlp": (_seeded(MLP), lambda: torch.randn(3, 10, generator=torch.Generator().manual_seed(1))),
    "embedding": (_seeded(EmbeddingModel), lambda: torch.randint(0, 50, (3, 7), generator=torch.Generator())),
    "conv2d": (_seeded(lambda: ConvModel(2)), lambda: torch.randn(2, 3, 8, 8, generator=torch.Generator())),
    "llama": (_seeded(_llama), _ids),
    "gpt2": (_seeded(_gpt2), _ids),
}


def run(model: torch.nn.Module, kind: str) -> torch.Tensor:
    torch.manual_seed(0)
    x = MODELS[kind][1]()
    model.eval()
    with torch.no_grad():
        out = model(x)
    return out.logits if hasattr(out, "logits") else out


def base(kind: str) -> torch.nn.Module:
    return MODELS[kind][0]()


def randomize(model: torch.nn.Module, seed: int, scale: float = 0.3) -> None:
    """Perturb every trainable tensor (LoRA factors, DoRA magnitudes) so a broken load cannot pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=g) * scale)


def keys(folder: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(folder / "adapter_model.safetensors", framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118


def check_config_reads_cleanly(folder: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        peft.PeftConfig.from_pretrained(str(folder))


# --------------------------------------------------------------------------------- DoRA
DORA_CASES = [
    pytest.param("mlp", dict(target_modules=["lin0", "lin1"], r=3, lora_alpha=6), id="linear"),
    pytest.param("embedding", dict(target_modules=["emb", "lin0"], r=2, lora_alpha=4), id="embedding"),
    pytest.param("conv2d", dict(target_modules=["conv0", "conv1"], r=2, lora_alpha=2), id="conv2d"),
    pytest.param(
        "gpt2", dict(target_modules=["c_attn", "c_proj", "c_fc"], r=2, lora_alpha=4, fan_in_fan_out=True), id="gpt2"
    ),
    pytest.param(
        "llama",
        dict(target_modules=["q_proj", "v_proj", "down_proj", "embed_tokens"], r=4, lora_alpha=8, use_rslora=True),
        id="llama",
    ),
]


@pytest.mark.parametrize("kind,kwargs", DORA_CASES)
def test_dora_both_ways(kind: str, kwargs: dict[str, Any], tmp_path: Path) -> None:
    # PEFT -> deltatune
    pm = peft.get_peft_model(base(kind), peft.LoraConfig(use_dora=True, init_lora_weights=False, **kwargs))
    randomize(pm, seed=1)
    expected = run(pm, kind)
    pm.save_pretrained(tmp_path / "peft", save_embedding_layers=False)  # no copy of the base embedding
    ours = dt.DeltaModel.from_pretrained(base(kind), tmp_path / "peft")
    torch.testing.assert_close(run(ours, kind), expected, atol=ATOL, rtol=ATOL)
    # deltatune -> PEFT
    model = dt.wrap(base(kind), dt.LoraConfig(use_dora=True, init_lora_weights=False, **kwargs))
    randomize(model, seed=2)
    expected = run(model, kind)
    model.save_pretrained(tmp_path / "ours")
    check_config_reads_cleanly(tmp_path / "ours")
    loaded = peft.PeftModel.from_pretrained(base(kind), str(tmp_path / "ours"))
    torch.testing.assert_close(run(loaded, kind), expected, atol=ATOL, rtol=ATOL)
    assert keys(tmp_path / "ours") == keys(tmp_path / "peft")
    assert any(k.endswith("lora_magnitude_vector") for k in keys(tmp_path / "ours"))
    # merged in deltatune == PEFT's unmerged
    model.merge_adapter()
    torch.testing.assert_close(run(model, kind), expected, atol=ATOL, rtol=ATOL)


# --------------------------------------------------------------------------------- PiSSA / OLoRA
INIT_KWARGS = dict(target_modules=["q_proj", "v_proj", "up_proj"], r=4, lora_alpha=8)
GPT2_KWARGS = dict(target_modules=["c_attn", "c_fc"], r=4, lora_alpha=8, fan_in_fan_out=True)


@pytest.mark.parametrize(
    "init,kind,kwargs",
    [("pissa", "llama", INIT_KWARGS), ("olora", "llama", INIT_KWARGS), ("pissa", "gpt2", GPT2_KWARGS)],
)
def test_base_mutating_init_adapters_both_ways(init: str, kind: str, kwargs: dict, tmp_path: Path) -> None:
    """Loading a PiSSA/OLoRA adapter redoes the (deterministic) init on the original base, in both libraries."""
    pm = peft.get_peft_model(base(kind), peft.LoraConfig(init_lora_weights=init, **kwargs))
    randomize(pm, seed=3, scale=0.05)
    expected = run(pm, kind)
    pm.save_pretrained(tmp_path / "peft")
    ours = dt.DeltaModel.from_pretrained(base(kind), tmp_path / "peft")
    torch.testing.assert_close(run(ours, kind), expected, atol=ATOL, rtol=ATOL)

    model = dt.wrap(base(kind), dt.LoraConfig(init_lora_weights=init, **kwargs))
    randomize(model, seed=4, scale=0.05)
    expected = run(model, kind)
    model.save_pretrained(tmp_path / "ours")
    check_config_reads_cleanly(tmp_path / "ours")
    loaded = peft.PeftModel.from_pretrained(base(kind), str(tmp_path / "ours"))
    torch.testing.assert_close(run(loaded, kind), expected, atol=ATOL, rtol=ATOL)
    assert keys(tmp_path / "ours") == keys(tmp_path / "peft")


@pytest.mark.parametrize("init", ["pissa", "olora", "pissa_niter_3"])
def test_conversion_to_plain_lora_both_ways(init: str, tmp_path: Path) -> None:
    """A trained PiSSA/OLoRA adapter saved as a rank-2r LoRA for the untouched original weights."""
    original = base("llama")
    # PEFT converts, deltatune loads the result on the original base.
    pm = peft.get_peft_model(base("llama"), peft.LoraConfig(init_lora_weights=init, **INIT_KWARGS))
    pm.save_pretrained(tmp_path / "peft_init")
    randomize(pm, seed=5, scale=0.05)
    expected = run(pm, "llama")
    pm.save_pretrained(tmp_path / "peft_lora", path_initial_model_for_weight_conversion=str(tmp_path / "peft_init"))
    ours = dt.DeltaModel.from_pretrained(copy.deepcopy(original), tmp_path / "peft_lora")
    torch.testing.assert_close(run(ours, "llama"), expected, atol=ATOL, rtol=ATOL)
    assert ours.peft_config["default"].r == 2 * INIT_KWARGS["r"]  # type: ignore[attr-defined]

    # deltatune converts, PEFT loads the result on the original base.
    model = dt.wrap(base("llama"), dt.LoraConfig(init_lora_weights=init, **INIT_KWARGS))
    model.save_pretrained(tmp_path / "ours_init")
    randomize(model, seed=6, scale=0.05)
    expected = run(model, "llama")
    model.save_pretrained(tmp_path / "ours_lora", path_initial_model_for_weight_conversion=tmp_path / "ours_init")
    check_config_reads_cleanly(tmp_path / "ours_lora")
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(original), str(tmp_path / "ours_lora"))
    torch.testing.assert_close(run(loaded, "llama"), expected, atol=ATOL, rtol=ATOL)
    again = dt.DeltaModel.from_pretrained(copy.deepcopy(original), tmp_path / "ours_lora")
    torch.testing.assert_close(run(again, "llama"), expected, atol=ATOL, rtol=ATOL)
    assert keys(tmp_path / "ours_lora") == keys(tmp_path / "peft_lora")


# --------------------------------------------------------------------------------- LoRA+
def test_loraplus_groups_match_peft() -> None:
    from peft.optimizers import create_loraplus_optimizer

    kwargs = dict(
        target_modules=["q_proj", "v_proj", "embed_tokens"],
        r=4,
        use_dora=True,
        bias="lora_only",
        modules_to_save=["lm_head", "norm"],
    )
    pm = peft.get_peft_model(base("llama"), peft.LoraConfig(**kwargs))
    theirs = create_loraplus_optimizer(
        pm,
        torch.optim.AdamW,
        lr=2e-4,
        loraplus_lr_ratio=8,
        loraplus_weight_decay=0.01,
        loraplus_lr_embedding=1e-5,
    )
    model = dt.wrap(base("llama"), dt.LoraConfig(**kwargs))
    ours = dt.optim.loraplus(model, lr=2e-4, ratio=8, weight_decay=0.01, lr_embedding=1e-5)

    def groups(opt: torch.optim.Optimizer) -> Counter:
        return Counter(
            (round(g["lr"], 12), g["weight_decay"], tuple(p.shape)) for g in opt.param_groups for p in g["params"]
        )

    assert groups(ours) == groups(theirs)
    assert {g["lr"] for g in ours.param_groups} == {2e-4, 1e-5, 1.6e-3}
