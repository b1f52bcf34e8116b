"""Bottleneck adapters (a deltatune method, DELTATUNE_BOTTLENECK): math, presets, errors, learning.

The invariant matrix (tests/test_invariants.py) covers identity init, disable, save->load and
trainability on every layer kind; this file covers what is specific to the method. PEFT has no
such method, so there is no interop test: PEFT cannot load these checkpoints.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deltatune as dt

transformers = pytest.importorskip("transformers")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.lin = nn.Linear(8, 12)
        self.ln = nn.LayerNorm(12)
        self.conv = nn.Conv1d(12, 4, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.ln(self.lin(self.emb(ids)))
        return self.conv(h.transpose(1, 2))


def _net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


IDS = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 19]])
ACT: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


# ------------------------------------------------------------------------------------ math
@pytest.mark.parametrize("placement", ["sequential", "parallel"])
@pytest.mark.parametrize("non_linearity", ["relu", "gelu", "swish", "tanh"])
def test_update_rule_matches_reference_math(placement: str, non_linearity: str) -> None:
    config = dt.BottleneckConfig(
        target_modules=["lin"],
        bottleneck_size=3,
        non_linearity=non_linearity,
        placement=placement,
        scaling=0.7,
        init_weights=False,
    )
    model = dt.wrap(_net(), config)
    layer = model.model.lin
    adapter = layer.adapters["default"]
    x = torch.randn(2, 5, 8)
    f = layer.base_layer(x)
    source = f if placement == "sequential" else x
    expected = f + 0.7 * adapter.adapter_up(ACT[non_linearity](adapter.adapter_down(source)))
    torch.testing.assert_close(layer(x), expected)
    assert adapter.adapter_down.weight.shape == (3, 12 if placement == "sequential" else 8)
    assert adapter.adapter_up.weight.shape == (12, 3)


def test_sizes_from_reduction_factor_and_identity_init() -> None:
    model = dt.wrap(_net(), dt.BottleneckConfig(target_modules=["lin", "ln", "emb"], reduction_factor=4))
    sizes = {p: a.adapter_down.out_features for p, a in model.adapter_modules("default")}
    assert sizes == {"emb": 2, "lin": 3, "ln": 3}
    for _, adapter in model.adapter_modules("default"):
        assert not adapter.adapter_up.weight.any() and not adapter.adapter_up.bias.any()
        assert adapter.adapter_down.weight.any()
    assert torch.equal(model(IDS), _net()(IDS))


def test_checkpoint_names_and_config(tmp_path: Path) -> None:
    model = dt.wrap(_net(), dt.BottleneckConfig(target_modules=["lin"], bottleneck_size=2, init_weights=False))
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    keys = sorted(load_file(tmp_path / "adapter_model.safetensors"))
    assert keys == [f"base_model.model.lin.adapter_{p}.{w}" for p in ("down", "up") for w in ("bias", "weight")]
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "DELTATUNE_BOTTLENECK" and config["bottleneck_size"] == 2
    loaded = dt.DeltaModel.from_pretrained(_net(), tmp_path)
    assert torch.equal(loaded(IDS), model(IDS))


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(reduction_factor=4, bottleneck_size=8),
        dict(reduction_factor=0),
        dict(bottleneck_size=0),
        dict(bottleneck_size=2.5),
        dict(non_linearity="sigmoid"),
        dict(placement="inside"),
        dict(style="lora"),
        dict(scaling=float("inf")),
        dict(init_weights="zeros"),
    ],
    ids=lambda k: "-".join(k),
)
def test_impossible_configs_raise(kwargs: dict) -> None:
    with pytest.raises(dt.ConfigError):
        dt.BottleneckConfig(**kwargs)


def test_unsupported_layers_raise_naming_the_module() -> None:
    model = _net()
    with pytest.raises(dt.UnsupportedLayerError, match="cannot wrap conv .*Conv1d"):
        dt.wrap(model, dt.BottleneckConfig(target_modules=["conv"]))
    with pytest.raises(dt.UnsupportedLayerError, match="parallel .*emb.*token ids"):
        dt.wrap(model, dt.BottleneckConfig(target_modules=["emb"], placement="parallel"))
    assert not any(isinstance(m, dt.AdaptedLayer) for m in model.modules())


def test_module_output_without_the_feature_dimension_is_refused() -> None:
    class PairLinear(nn.Linear):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
            return super().forward(x), x

    model = _net()
    model.lin = PairLinear(8, 12)
    model = dt.wrap(model, dt.BottleneckConfig(target_modules=["lin"]))
    with pytest.raises(dt.UnsupportedLayerError, match="on lin needs one output tensor with 12 features.*tuple"):
        model.model.lin(torch.randn(2, 8))


def test_merge_is_refused_clearly_and_changes_nothing() -> None:
    model = dt.wrap(_net(), dt.BottleneckConfig(target_modules=["lin", "ln"], init_weights=False))
    before = copy.deepcopy(model.state_dict())
    out = model(IDS)
    with pytest.raises(dt.MergeError, match="cannot be merged.*non-linear.*unmerged"):
        model.merge_adapter()
    with pytest.raises(dt.MergeError, match="non-linear"):
        model.merge_and_unload()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(layer.merged for _, layer in model.adapted_layers())
    assert torch.equal(model(IDS), out)


def test_mixed_batches_are_refused() -> None:
    model = dt.wrap(_net(), dt.BottleneckConfig(target_modules=["lin"]))
    with pytest.raises(dt.DeltatuneError, match="mixed batch"):
        model(IDS, adapter_names=["default", dt.BASE])


def test_checkpoint_of_another_size_is_refused(tmp_path: Path) -> None:
    dt.wrap(_net(), dt.BottleneckConfig(target_modules=["lin"], bottleneck_size=2)).save_pretrained(tmp_path)
    config = dt.BottleneckConfig(target_modules=["lin"], bottleneck_size=4)
    with pytest.raises(dt.CheckpointError, match="shape"):
        dt.DeltaModel.from_pretrained(_net(), tmp_path, config=config)


# ------------------------------------------------------------------------------------ presets
def _tiny(model_type: str) -> nn.Module:
    common = dict(vocab_size=64, num_attention_heads=4)
    configs = {
        "bert": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2),
        "roberta": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2),
        "llama": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_key_value_heads=2),
        "gpt2": dict(n_embd=32, n_layer=2, n_head=4),
        "t5": dict(d_model=32, d_kv=8, d_ff=48, num_layers=1, num_heads=4),
    }
    kwargs = {**common, **configs[model_type]}
    if model_type in ("gpt2", "t5"):
        kwargs.pop("num_attention_heads")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = transformers.AutoConfig.for_model(model_type, **kwargs)
        return transformers.AutoModel.from_config(config)


PRESETS = {
    ("bert", "houlsby"): {"attention.output.dense", "output.dense"},
    ("bert", "pfeiffer"): {"output.dense"},
    ("roberta", "pfeiffer"): {"output.dense"},
    ("llama", "houlsby"): {"self_attn.o_proj", "mlp.down_proj"},
    ("llama", "pfeiffer"): {"mlp.down_proj"},
    ("gpt2", "houlsby"): {"attn.c_proj", "mlp.c_proj"},
    ("gpt2", "pfeiffer"): {"mlp.c_proj"},
    ("t5", "houlsby"): {"SelfAttention.o", "EncDecAttention.o", "DenseReluDense.wo"},
    ("t5", "pfeiffer"): {"DenseReluDense.wo"},
}


@pytest.mark.parametrize("model_type,style", sorted(PRESETS))
def test_style_presets_per_model_type(model_type: str, style: str) -> None:
    model = dt.wrap(_tiny(model_type), dt.BottleneckConfig(style=style))
    paths = [path for path, _ in model.adapted_layers()]
    assert paths
    # The block-relative part of each path (after the layer index), e.g. "attention.output.dense".
    suffixes = {
        ".".join(p.split(".")[p.split(".").index(next(s for s in p.split(".") if s.isdigit())) + 1 :]) for p in paths
    }
    if model_type == "t5":
        suffixes = {".".join(s.split(".")[-2:]) for s in suffixes}
    assert suffixes == PRESETS[model_type, style]


def test_no_preset_for_an_unknown_model_type() -> None:
    with pytest.raises(dt.TargetError, match="no default"):
        dt.wrap(_net(), dt.BottleneckConfig())


# ------------------------------------------------------------------------------------ learning
def _bert_classifier() -> nn.Module:
    # A wider initialisation than BERT's 0.02 gives the random encoder features a trained one has.
    cfg = transformers.BertConfig(
        vocab_size=32,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=16,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.2,
    )
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.BertForSequenceClassification(cfg)


def _task() -> tuple[torch.Tensor, torch.Tensor]:
    """Label 1 iff token 3 sits at position 3 (token 3 appears nowhere else)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 32, (64, 8), generator=g)
    ids[:, 0] = 2
    labels = torch.randint(0, 2, (64,), generator=g)
    ids[:, 3] = torch.where(labels == 1, torch.tensor(3), ids[:, 3])
    return ids, labels


@pytest.mark.parametrize(
    "config",
    [dt.BottleneckConfig(reduction_factor=4), dt.LNTuningConfig()],
    ids=lambda c: c.peft_type,
)
def test_adapter_alone_learns_a_synthetic_task(config: dt.AdapterConfig) -> None:
    """With the encoder and the classification head frozen, only the adapter can lower the loss."""
    ids, labels = _task()
    model = dt.wrap(_bert_classifier(), config)  # no task_type: the head stays frozen
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead on a shared machine
    try:
        for _ in range(100):
            loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    assert losses[-1] < 0.25 * losses[0], losses[::10]
    with torch.no_grad(), model.disable_adapters():
        assert model(input_ids=ids, labels=labels).loss.item() > 0.5  # the base model did not change
