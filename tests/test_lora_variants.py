"""LoRA variants inside deltatune: DoRA against reference math, PiSSA/OLoRA/orthogonal inits and their
conversion to plain LoRA, LoRA+ parameter groups. Interop with PEFT: tests/test_interop_lora_variants.py."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from tests.models import MLP, ConvModel, EmbeddingModel, GPT2Conv1DModel, tiny_llama
from torch import nn

import deltatune as dt
from deltatune.methods.lora.adapter import LoraAdapter


def _randomize(model: nn.Module, seed: int = 0, scale: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * scale)


def _adapters(model: dt.DeltaModel, name: str = "default") -> dict[str, LoraAdapter]:
    out = {}
    for path, adapter in model.adapter_modules(name):
        assert isinstance(adapter, LoraAdapter)
        out[path] = adapter
    return out


# --------------------------------------------------------------------------------- DoRA: reference
def reference_dora_weight(w0: torch.Tensor, delta: torch.Tensor, m: torch.Tensor, feature_dim: int) -> torch.Tensor:
    """W' = m * (W0 + dW) / ||W0 + dW|| with the norm per output feature and detached (paper, sec. 4.3)."""
    combined = w0 + delta
    dims = [d for d in range(combined.dim()) if d != feature_dim]
    norm = torch.linalg.vector_norm(combined, dim=dims, keepdim=True).detach()
    return m.reshape(norm.shape) * combined / norm


def reference_forward(base: nn.Module, adapter: LoraAdapter, x: torch.Tensor) -> torch.Tensor:
    """The layer computed from the materialised DoRA weight, in the plainest way."""
    a, b = adapter.factors()
    m = adapter.lora_magnitude_vector
    s = adapter.scaling
    if isinstance(base, nn.Embedding):
        delta = (b @ a).t() * s  # (num, dim)
        return F.embedding(x, reference_dora_weight(base.weight, delta, m, 1), base.padding_idx)
    if isinstance(base, nn.Conv2d):
        delta = (b.flatten(1) @ a.flatten(1)).view(base.weight.shape) * s
        w = reference_dora_weight(base.weight, delta, m, 0)
        return F.conv2d(x, w, base.bias, base.stride, base.padding)
    w0 = base.weight.t() if type(base).__name__ == "Conv1D" else base.weight  # (out, in)
    return F.linear(x, reference_dora_weight(w0, (b @ a) * s, m, 0), base.bias)


PARITY = [
    pytest.param(MLP, "lin0", lambda: torch.randn(4, 3, 10), id="linear"),
    pytest.param(GPT2Conv1DModel, "c_fc", lambda: torch.randn(2, 5, 10), id="gpt2_conv1d"),
    pytest.param(EmbeddingModel, "emb", lambda: torch.randint(1, 50, (3, 7)), id="embedding"),  # no padding id
    pytest.param(lambda: ConvModel(2), "conv0", lambda: torch.randn(2, 3, 8, 8), id="conv2d"),
]


@pytest.mark.parametrize("build,target,inputs", PARITY)
def test_dora_forward_and_grads_match_reference(build, target, inputs) -> None:
    torch.manual_seed(0)
    model = dt.wrap(build(), dt.LoraConfig(target_modules=[target], r=3, lora_alpha=5, use_dora=True))
    _randomize(model)
    layer = model.model.get_submodule(target)
    base, adapter = layer.base_layer, layer.adapters["default"]
    x = inputs()
    for mode in ("train", "eval"):
        getattr(model, mode)()
        ours = layer(x)
        ref = reference_forward(base, adapter, x)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
        params = list(adapter.parameters())
        g_ours = torch.autograd.grad(ours.square().sum(), params)
        g_ref = torch.autograd.grad(ref.square().sum(), params)
        for go, gr in zip(g_ours, g_ref, strict=True):
            torch.testing.assert_close(go, gr, atol=1e-4, rtol=1e-4)
    with torch.no_grad():  # inference scales the output in place
        torch.testing.assert_close(layer(x), reference_forward(base, adapter, x), atol=1e-5, rtol=1e-5)


def test_dora_dropout_path_in_training() -> None:
    torch.manual_seed(0)
    model = dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin0"], r=3, lora_dropout=0.5, use_dora=True))
    _randomize(model)
    layer = model.model.lin0
    base, adapter = layer.base_layer, layer.adapters["default"]
    x = torch.randn(6, 10)
    model.train()
    torch.manual_seed(7)
    ours = layer(x)
    torch.manual_seed(7)
    xd = F.dropout(x, 0.5, training=True)
    a, b = adapter.factors()
    s = adapter.scaling
    norm = (base.weight + s * b @ a).norm(dim=1).detach()
    f = adapter.lora_magnitude_vector / norm
    # PEFT's rule: h = W0 x + b + (f - 1) W0 x' + f s B A x'  with x' = dropout(x)
    ref = base(x) + (f - 1) * F.linear(xd, base.weight) + f * s * F.linear(F.linear(xd, a), b)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    model.eval()  # no dropout: the plain rule
    torch.testing.assert_close(layer(x), reference_forward(base, adapter, x), atol=1e-5, rtol=1e-5)


def test_dora_on_a_bf16_base_computes_in_fp32(tmp_path) -> None:
    torch.manual_seed(0)
    base = MLP()
    model = dt.wrap(copy.deepcopy(base), dt.LoraConfig(target_modules=["lin0", "lin1"], r=2, use_dora=True))
    _randomize(model)
    model.save_pretrained(tmp_path)
    low = dt.DeltaModel.from_pretrained(copy.deepcopy(base).to(torch.bfloat16), tmp_path)
    assert low.model.lin0.adapters["default"].lora_magnitude_vector.dtype == torch.float32
    x = torch.randn(4, 10)
    out = low(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), model.eval()(x), atol=5e-2, rtol=5e-2)


def test_dora_starts_as_lora_and_magnitude_is_the_norm() -> None:
    torch.manual_seed(0)
    base = MLP()
    torch.manual_seed(0)
    lora = dt.wrap(copy.deepcopy(base), dt.LoraConfig(target_modules=["lin0"], init_lora_weights=False))
    torch.manual_seed(0)
    dora = dt.wrap(copy.deepcopy(base), dt.LoraConfig(target_modules=["lin0"], init_lora_weights=False, use_dora=True))
    x = torch.randn(3, 10)
    torch.testing.assert_close(dora(x), lora(x), atol=1e-6, rtol=1e-6)
    adapter = _adapters(dora)["lin0"]
    expected = (base.lin0.weight + adapter.delta_weight()).norm(dim=1)
    torch.testing.assert_close(adapter.lora_magnitude_vector.detach(), expected)
    assert "lora_magnitude_vector" in dict(adapter.named_parameters())


def test_eval_cache_is_used_and_never_stale() -> None:
    torch.manual_seed(0)
    model = dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin0"], r=2, use_dora=True)).eval()
    _randomize(model)
    layer = model.model.lin0
    adapter = layer.adapters["default"]
    x = torch.randn(3, 10)
    first = model(x)
    cached = adapter.dora.norm
    assert cached is not None
    torch.testing.assert_close(model(x), first, atol=0, rtol=0)
    assert adapter.dora.norm[1] is cached[1], "an unchanged adapter reuses the cached norm"
    with torch.no_grad():  # an in-place change (as an optimizer step makes) invalidates it
        adapter.lora_B.weight.mul_(2.0)
    torch.testing.assert_close(layer(x), reference_forward(layer.base_layer, adapter, x), atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # so does a change of the base weight
        layer.base_layer.weight.add_(0.1)
    torch.testing.assert_close(layer(x), reference_forward(layer.base_layer, adapter, x), atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # and a replaced tensor
        adapter.lora_A.weight.data = adapter.lora_A.weight.data * 3
    torch.testing.assert_close(layer(x), reference_forward(layer.base_layer, adapter, x), atol=1e-5, rtol=1e-5)
    model.train()
    assert adapter.dora.norm is None and adapter.dora.base_sq is None, "train() clears the caches"
    model(x)
    assert adapter.dora.norm is None, "no norm cache while training"


def test_optimizer_steps_in_eval_mode_are_seen() -> None:
    torch.manual_seed(0)
    model = dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin0", "lin1"], r=2, use_dora=True)).eval()
    _randomize(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(4, 10)
    layer = model.model.lin0
    for _ in range(2):
        model(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
        ref = reference_forward(layer.base_layer, layer.adapters["default"], x)
        torch.testing.assert_close(layer(x), ref, atol=1e-5, rtol=1e-5)


def test_dora_merge_of_two_adapters_in_turn_and_errors() -> None:
    torch.manual_seed(0)
    base = MLP()
    model = dt.wrap(copy.deepcopy(base), dt.LoraConfig(target_modules=["lin0"], r=2, use_dora=True))
    _randomize(model)
    x = torch.randn(3, 10)
    out = model(x)
    model.merge_adapter()
    torch.testing.assert_close(model(x), out, atol=1e-5, rtol=1e-5)
    model.unmerge_adapter()
    torch.testing.assert_close(model.model.lin0.base_layer.weight, base.lin0.weight, atol=1e-6, rtol=0)
    adapter = _adapters(model)["lin0"]
    with pytest.raises(dt.MergeError, match="not merged"):
        adapter.unmerge_from(base.lin0.weight.detach().clone())
    with torch.no_grad():
        adapter.lora_magnitude_vector[0] = 0.0
    with pytest.raises(dt.MergeError, match="zero entries"):
        model.merge_adapter()
    torch.testing.assert_close(model.model.lin0.base_layer.weight, base.lin0.weight, atol=1e-6, rtol=0)


def test_mixed_batch_dora_with_plain_lora_forward_and_grads() -> None:
    torch.manual_seed(0)
    targets = ["c_fc", "c_proj"]
    base = GPT2Conv1DModel()
    model = dt.wrap(copy.deepcopy(base), dt.LoraConfig(target_modules=targets, r=2, use_dora=True))
    model.add_adapter("plain", dt.LoraConfig(target_modules=targets, r=3, init_lora_weights=False))
    model.add_adapter("dora2", dt.LoraConfig(target_modules=targets, r=4, use_dora=True, init_lora_weights=False))
    _randomize(model, seed=1)
    model.set_adapter(["default", "plain", "dora2"])
    _randomize(model, seed=2)
    model.train()
    x = torch.randn(5, 4, 10)
    names = ["dora2", "plain", dt.BASE, "default", "dora2"]
    mixed = model(x, adapter_names=names)
    mixed.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    expected = []
    for i, name in enumerate(names):
        if name == dt.BASE:
            expected.append(base(x[i : i + 1]))
            continue
        model.set_adapter(name)
        out = model(x[i : i + 1])
        out.square().sum().backward()
        expected.append(out)
    torch.testing.assert_close(mixed, torch.cat(expected), atol=1e-5, rtol=1e-5)
    for n, g in grads.items():
        torch.testing.assert_close(g, model.get_parameter(n).grad, atol=1e-4, rtol=1e-4)
    assert any("lora_magnitude_vector" in n for n in grads)


@pytest.mark.parametrize(
    "build,target,x", [(GPT2Conv1DModel, "c_fc", (3, 4, 10)), (lambda: ConvModel(2), "conv0", (3, 3, 8, 8))]
)
def test_mixed_batch_dora_dropout_path(build, target, x, monkeypatch) -> None:
    """Training with dropout: each DoRA row follows h = W0 x + b + (f - 1) W0 x' + f s B A x'."""
    torch.manual_seed(0)
    model = dt.wrap(build(), dt.LoraConfig(target_modules=[target], r=2, lora_dropout=0.5, use_dora=True))
    model.add_adapter("plain", dt.LoraConfig(target_modules=[target], r=2, lora_dropout=0.5, init_lora_weights=False))
    _randomize(model)
    model.train()
    layer = model.model.get_submodule(target)
    base, adapter = layer.base_layer, layer.adapters["default"]
    # A deterministic "dropout" that keeps every element: x' = x / (1 - p)
    monkeypatch.setattr("deltatune.methods.lora.mixed.torch.rand_like", lambda t: torch.ones_like(t))
    inputs = torch.randn(*x)
    names = ["default", dt.BASE, "plain"]
    with model._route(names):
        mixed = layer(inputs)
    xd = inputs / 0.5
    a, b = adapter.factors()
    w0 = base.weight.t() if target == "c_fc" else base.weight
    norm = torch.linalg.vector_norm(w0 + adapter.delta_weight(), dim=list(range(1, w0.dim())))
    f = adapter.lora_magnitude_vector.reshape(-1) / norm
    if target == "c_fc":
        w0x = F.linear(xd[0], w0)
        bax = F.linear(F.linear(xd[0], a), b)
        f0 = f
    else:
        w0x = F.conv2d(xd[:1], w0, None, base.stride, base.padding)[0]
        bax = adapter.lora_B(adapter.lora_A(xd[:1]))[0]
        f0 = f.view(-1, 1, 1)
    row0 = base(inputs[:1])[0] + (f0 - 1) * w0x + f0 * adapter.scaling * bax
    torch.testing.assert_close(mixed[0], row0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[1], base(inputs[1:2])[0], atol=1e-6, rtol=0)
    plain = layer.adapters["plain"]
    torch.testing.assert_close(mixed[2], plain.lora_delta(xd[2:3], base(inputs[2:3]))[0], atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------- inits
def _svd_top(w: torch.Tensor, r: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    return u[:, :r] @ torch.diag(s[:r]) @ vh[:r]


@pytest.mark.parametrize("init", ["pissa", "pissa_niter_4", "olora", "orthogonal"])
def test_base_aware_inits_start_as_the_base_model(init: str) -> None:
    torch.manual_seed(0)
    base = tiny_llama()
    ref = copy.deepcopy(base)
    cfg = dt.LoraConfig(target_modules=["q_proj", "up_proj", "embed_tokens"], r=4, lora_alpha=8, init_lora_weights=init)
    model = dt.wrap(base, cfg)
    ids = torch.randint(0, 64, (2, 9))
    torch.testing.assert_close(model(ids).logits, ref(ids).logits, atol=1e-5, rtol=1e-5)
    q = model.model.model.layers[0].self_attn.q_proj
    adapter = q.adapters["default"]
    w_orig = ref.model.layers[0].self_attn.q_proj.weight
    a, b = adapter.factors()
    assert a.abs().sum() > 0 and b.abs().sum() > 0
    if init == "orthogonal":
        torch.testing.assert_close(b @ a, torch.zeros_like(w_orig), atol=1e-7, rtol=0)
        assert torch.equal(q.base_layer.weight, w_orig), "orthogonal init keeps the base weight"
    else:
        torch.testing.assert_close(q.base_layer.weight + adapter.delta_weight(), w_orig, atol=1e-6, rtol=0)
        assert not torch.allclose(q.base_layer.weight, w_orig)
    if init == "pissa":  # B A s is the best rank-r approximation of W
        torch.testing.assert_close(adapter.delta_weight(), _svd_top(w_orig, 4), atol=1e-5, rtol=1e-4)
    if init == "olora":  # B = the first r columns of Q: orthonormal
        torch.testing.assert_close(b.t() @ b, torch.eye(4), atol=1e-5, rtol=0)
    emb = model.model.model.embed_tokens.adapters["default"]
    assert torch.equal(emb.lora_embedding_A, torch.zeros_like(emb.lora_embedding_A)), "embeddings: default init"


def test_init_errors() -> None:
    with pytest.raises(dt.ConfigError, match="even rank"):
        dt.LoraConfig(r=3, init_lora_weights="orthogonal")
    with pytest.raises(dt.ConfigError, match="even rank"):
        dt.LoraConfig(r=4, rank_pattern={"q": 5}, init_lora_weights="orthogonal")
    for bad in ("pissa_niter_", "pissa_niter_x", "loftq", "olora2"):
        with pytest.raises(dt.ConfigError, match="init_lora_weights"):
            dt.LoraConfig(init_lora_weights=bad)
    with pytest.raises(dt.ConfigError, match="use_dora"):
        dt.LoraConfig(use_dora="yes")  # type: ignore[arg-type]
    with pytest.raises(dt.UnsupportedLayerError, match="Linear.*conv0"):
        dt.wrap(ConvModel(2), dt.LoraConfig(target_modules=["conv0"], init_lora_weights="pissa"))
    with pytest.raises(dt.ConfigError, match="exceeds the rank"):
        dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin1"], r=8, init_lora_weights="olora"))


class _LinConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.conv = nn.Conv1d(4, 4, 1)


@pytest.mark.parametrize(
    "build,cfg",
    [
        (_LinConv, dict(target_modules=["lin", "conv"], r=2, init_lora_weights="pissa")),
        (MLP, dict(target_modules=["lin0", "lin1"], r=8, init_lora_weights="olora")),  # lin1 (6 x 20) is too small
    ],
)
def test_failed_decomposition_leaves_every_base_weight_unchanged(build, cfg) -> None:
    torch.manual_seed(0)
    model = build()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(dt.ConfigError):  # UnsupportedLayerError is a ConfigError
        dt.wrap(model, dt.LoraConfig(**cfg))
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), f"{name} was rewritten by a failed add_adapter"


def test_pissa_adapter_reloads_on_the_original_base(tmp_path) -> None:
    torch.manual_seed(0)
    base = MLP()
    model = dt.wrap(copy.deepcopy(base), dt.LoraConfig(target_modules=["lin0", "lin1"], r=3, init_lora_weights="pissa"))
    _randomize(model, scale=0.05)  # "training"
    x = torch.randn(4, 10)
    trained = model(x)
    model.save_pretrained(tmp_path)
    loaded = dt.DeltaModel.from_pretrained(copy.deepcopy(base), tmp_path)  # re-runs PiSSA on the base, as PEFT
    torch.testing.assert_close(loaded(x), trained, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------- conversion
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(init_lora_weights="pissa", r=2, lora_alpha=6),
        dict(init_lora_weights="olora", r=3, lora_alpha=3, use_rslora=True, rank_pattern={"lin1": 2}),
        dict(init_lora_weights="pissa_niter_2", r=2, alpha_pattern={"lin0": 5.0}, use_rslora=True),
    ],
)
def test_conversion_to_plain_lora(tmp_path, kwargs) -> None:
    torch.manual_seed(0)
    base = MLP()
    cfg = dt.LoraConfig(target_modules=["lin0", "lin1"], modules_to_save=["act"], **kwargs)
    model = dt.wrap(copy.deepcopy(base), cfg)
    model.save_pretrained(tmp_path / "init")
    _randomize(model, scale=0.05)
    x = torch.randn(4, 10)
    trained = model(x)
    model.save_pretrained(tmp_path / "lora", path_initial_model_for_weight_conversion=tmp_path / "init")
    saved = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert saved["r"] == 2 * cfg.r and saved["init_lora_weights"] is True
    assert saved["rank_pattern"] == {k: 2 * v for k, v in cfg.rank_pattern.items()}
    factor = math.sqrt(2) if cfg.use_rslora else 2
    assert saved["lora_alpha"] == pytest.approx(cfg.lora_alpha * factor)
    converted = dt.DeltaModel.from_pretrained(copy.deepcopy(base), tmp_path / "lora")  # the untouched base
    torch.testing.assert_close(converted(x), trained, atol=1e-5, rtol=1e-5)
    # The in-memory adapter is unchanged by the converted save.
    torch.testing.assert_close(model(x), trained, atol=0, rtol=0)


def test_conversion_errors(tmp_path) -> None:
    torch.manual_seed(0)
    model = dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin0"], r=2, init_lora_weights="pissa", use_dora=True))
    model.save_pretrained(tmp_path / "init")
    with pytest.raises(dt.ConfigError, match="DoRA"):
        model.save_pretrained(tmp_path / "x", path_initial_model_for_weight_conversion=tmp_path / "init")
    model = dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin0"], r=2, init_lora_weights=False))
    with pytest.raises(dt.ConfigError, match="init_lora_weights=False"):
        model.save_pretrained(tmp_path / "x", path_initial_model_for_weight_conversion=tmp_path / "init")
    other = dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin0"], r=3, init_lora_weights="olora"))
    with pytest.raises(dt.CheckpointError, match="initial factors"):
        other.save_pretrained(tmp_path / "x", path_initial_model_for_weight_conversion=tmp_path / "init")
    assert not (tmp_path / "x" / "adapter_model.safetensors").exists()


# --------------------------------------------------------------------------------- LoRA+
def test_loraplus_groups_by_what_parameters_are() -> None:
    torch.manual_seed(0)
    cfg = dt.LoraConfig(target_modules=["emb", "lin0"], r=2, use_dora=True, bias="all")
    model = dt.wrap(EmbeddingModel(), cfg)
    opt = dt.optim.loraplus(model, lr=1e-3, ratio=8, weight_decay=0.01, lr_embedding=1e-5, betas=(0.8, 0.9))
    assert isinstance(opt, torch.optim.AdamW)
    groups = {(g["lr"], g["weight_decay"]): {id(p) for p in g["params"]} for g in opt.param_groups}
    emb = model.model.emb.adapters["default"]
    lin = model.model.lin0.adapters["default"]
    assert groups[(1e-3, 0.01)] == {id(lin.lora_A.weight)}
    assert groups[(1e-5, 0.01)] == {id(emb.lora_embedding_A), id(emb.lora_embedding_B)}
    assert groups[(8e-3, 0.01)] == {id(lin.lora_B.weight), id(lin.lora_magnitude_vector), id(emb.lora_magnitude_vector)}
    assert groups[(8e-3, 0.0)] == {id(model.model.lin0.base_layer.bias)}
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)
    everything = {id(p) for p in model.parameters() if p.requires_grad}
    assert set().union(*groups.values()) == everything
    model(torch.randint(0, 50, (2, 5))).sum().backward()
    opt.step()


def test_loraplus_errors() -> None:
    with pytest.raises(dt.ConfigError, match="ratio"):
        dt.optim.loraplus(dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin0"])), lr=1e-3, ratio=0)
    frozen = MLP().requires_grad_(False)
    with pytest.raises(dt.DeltatuneError, match="no trainable"):
        dt.optim.loraplus(frozen, lr=1e-3)


def test_dora_weight_norm_matches_direct_formula() -> None:
    """||W0 + s B A|| per row from ||W0||^2 (cached) + s b.(2 W0 A^T + s (A A^T) b), fp32, detached."""
    from deltatune.methods.lora import dora

    torch.manual_seed(0)
    model = dt.wrap(nn.Sequential(nn.Linear(300, 64)), dt.LoraConfig(target_modules=["0"], r=8, use_dora=True))
    _randomize(model)
    layer = model.model[0]
    adapter, base = layer.adapters["default"], layer.base_layer
    for _ in range(2):  # the second call reads the cached ||W0||^2
        norm = dora.weight_norm(adapter, base)
        direct = torch.linalg.vector_norm(base.weight + adapter.delta_weight(), dim=1)
        torch.testing.assert_close(norm, direct.detach(), atol=1e-5, rtol=0)
        assert not norm.requires_grad
    with torch.no_grad():
        base.weight.mul_(2)  # a changed base weight invalidates the cache
    torch.testing.assert_close(
        dora.weight_norm(adapter, base),
        torch.linalg.vector_norm(base.weight + adapter.delta_weight(), dim=1).detach(),
        atol=1e-5,
        rtol=0,
    )


@pytest.mark.parametrize("shape", [(4, 3, 10), (2, 10)], ids=["f_on_weights", "f_on_grad"])  # tokens vs in=10
def test_dora_fused_linear_matches_generic_path(shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-node DoRA of a plain Linear (dora.FusedDoraLinear) gives the generic path's output and
    gradients (input, A, B, magnitude); a forward hook on the base makes the layer take the generic path."""
    from deltatune.methods.lora import dora

    torch.manual_seed(0)
    model = dt.wrap(MLP(), dt.LoraConfig(target_modules=["lin0"], r=3, use_dora=True)).train()
    _randomize(model)
    layer = model.model.lin0
    results, calls = [], []
    apply = dora.FusedDoraLinear.apply
    monkeypatch.setattr(dora.FusedDoraLinear, "apply", lambda *args: calls.append(True) or apply(*args))
    for generic in (False, True):
        hook = layer.base_layer.register_forward_hook(lambda *args: None) if generic else None
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1), requires_grad=True)
        y = layer(x)
        params = list(layer.adapters["default"].parameters())
        grads = torch.autograd.grad(y.square().sum(), [x, *params])
        results.append((y.detach(), *grads))
        if hook is not None:
            hook.remove()
    assert len(calls) == 1
    for fused_value, generic_value in zip(*results, strict=True):
        torch.testing.assert_close(fused_value, generic_value, atol=1e-5, rtol=1e-5)
