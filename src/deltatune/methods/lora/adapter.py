"""LoRA adapters for dense, embedding and convolution layers.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models" (2021); rsLoRA: Kalajdzievski,
"A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA" (2023).

Update rule: ``h = W0 x + s * B(A(dropout(x)))`` with ``s = alpha / r`` (rsLoRA ``alpha / sqrt(r)``).
Shapes (canonical, see weights.py): dense ``A: (r, in)``, ``B: (out, r)``; embedding
``A: (r, num_embeddings)``, ``B: (dim, r)``; convolution ``A: (r, in, *kernel)``,
``B: (out, r, 1, ...)``. Parameter names are PEFT's checkpoint names.

Variants are options on these adapters, not other classes: DoRA (``dora.py``) adds a magnitude
per output feature; PiSSA / OLoRA / orthogonal inits (``init.py``) only choose the first A and B.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from deltatune import targeting, weights
from deltatune.errors import UnsupportedLayerError
from deltatune.layer import Adapter
from deltatune.methods.lora import dora, fused
from deltatune.methods.lora import init as lora_init
from deltatune.methods.lora.config import LoraConfig
from deltatune.methods.lora.mixed import mixed_conv, mixed_embedding, mixed_linear

_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class LoraAdapter(Adapter):
    """What every LoRA adapter shares: rank, scaling, dropout, dtype casting, the DoRA option.

    With DoRA on (``use_dora=True``) the adapter also holds ``lora_magnitude_vector`` and reads
    the base weight in forward (see ``dora.py`` for the rule and shapes).
    """

    # Checkpoint names of the (A, B) factors: LoRA+ and the PiSSA conversion find them through these.
    factor_names: ClassVar[tuple[str, str]] = ("lora_A.weight", "lora_B.weight")
    # Dimension of the canonical base weight that indexes output features (DoRA's norm is per feature).
    feature_dim: ClassVar[int] = 0
    # Registered by dora.attach when use_dora=True (PEFT's name); absent otherwise.
    lora_magnitude_vector: nn.Parameter

    def __init__(self, r: int, alpha: float, dropout: float, use_rslora: bool) -> None:
        super().__init__()
        self.r = r
        self.lora_alpha = alpha
        self.scaling = alpha / math.sqrt(r) if use_rslora else alpha / r
        self.dropout_p = dropout
        self.lora_dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.dora: dora.DoraState | None = None  # set by dora.attach when use_dora=True

    @property
    def needs_base(self) -> bool:  # type: ignore[override]
        return self.dora is not None  # DoRA's norm reads the base weight

    @property
    def additive(self) -> bool:  # type: ignore[override]
        return self.dora is None  # DoRA renormalises the weight below it: it does not commute

    @property
    def reads_stored_weight(self) -> bool:  # type: ignore[override]
        return self.dora is not None  # DoRA's norm is of the stored weight, not of what runs below it

    def forward(
        self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor], base: nn.Module | None = None
    ) -> torch.Tensor:
        if self.dora is not None:
            assert base is not None, "AdaptedLayer passes the base module to adapters with needs_base"
            return dora.forward(self, x, inner, base)
        return self.add_delta(x, inner(x))

    # ------------------------------------------------------------------ the LoRA product
    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (A, B) parameters as stored (shapes in the module docstring)."""
        raise NotImplementedError

    def reset(self, init: bool | str) -> None:
        """Set A and B for ``init`` True, "gaussian" or False (the others are in init.py)."""
        raise NotImplementedError

    def lora_input(self, x: torch.Tensor) -> torch.Tensor:
        """What A sees: the input in the adapter's dtype, after dropout."""
        return self.lora_dropout(x.to(self.factors()[0].dtype))

    def add_delta(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``out + s * B A dropout(x)``."""
        return self.lora_delta(self.lora_input(x), out)

    def lora_delta(self, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``out + s * B A h`` for an input already through :meth:`lora_input`, in ``out``'s dtype."""
        raise NotImplementedError

    # ------------------------------------------------------------------ DoRA hooks (layout only)
    def weight_rows(self, weight: torch.Tensor) -> torch.Tensor:
        """The canonical weight as (features, fan_in): one row per output feature."""
        return weight.flatten(1) if self.feature_dim == 0 else weight.t()

    def feature_view(self, v: torch.Tensor, ndim: int) -> torch.Tensor:
        """A per-feature vector shaped to broadcast over a canonical weight of ``ndim`` dims."""
        shape = [1] * ndim
        shape[self.feature_dim] = -1
        return v.reshape(shape)

    def magnitude_shape(self, features: int) -> tuple[int, ...]:
        """Shape of ``lora_magnitude_vector`` (PEFT's): broadcastable over the layer's output."""
        return (features,)

    def base_apply(self, base: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The base layer without its bias, in ``x``'s dtype (DoRA with dropout needs W0 dropout(x))."""
        raise NotImplementedError

    # ------------------------------------------------------------------ merging
    def merge_into(self, weight: torch.Tensor) -> torch.Tensor:
        if self.dora is not None:
            return dora.merge_into(self, weight)
        return super().merge_into(weight)

    def unmerge_from(self, weight: torch.Tensor) -> torch.Tensor:
        if self.dora is not None:
            return dora.unmerge_from(self, weight)
        return super().unmerge_from(weight)

    def train(self, mode: bool = True) -> LoraAdapter:
        if self.dora is not None:
            self.dora.clear()  # eval-time caches never outlive a switch of mode
        return super().train(mode)

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling:g}" + (", dora=True" if self.dora is not None else "")


def reset_factors(a: torch.Tensor, b: torch.Tensor, r: int, init: bool | str) -> None:
    """True: A Kaiming-uniform, B = 0; "gaussian": A ~ N(0, 1/r), B = 0; False: leave both random."""
    if init is False:
        return
    if init == "gaussian":
        nn.init.normal_(a, std=1 / r)
    else:
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
    nn.init.zeros_(b)


class LoraLinear(LoraAdapter):
    mixed_forward = staticmethod(mixed_linear)
    needs_base = True  # type: ignore[assignment]  # the fused path reads the base weight

    def __init__(self, in_features: int, out_features: int, r: int, alpha: float, dropout: float, rs: bool) -> None:
        super().__init__(r, alpha, dropout, rs)
        self.lora_A = nn.Linear(in_features, r, bias=False)
        self.lora_B = nn.Linear(r, out_features, bias=False)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lora_A.weight, self.lora_B.weight

    def reset(self, init: bool | str) -> None:
        reset_factors(self.lora_A.weight, self.lora_B.weight, self.r, init)

    def forward(
        self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor], base: nn.Module | None = None
    ) -> torch.Tensor:
        a = self.lora_A.weight
        if inner is base and self.dora is None and self.dropout_p == 0 and weights.fusable_linear(base, x, a):
            b = self.lora_B.weight
            tokens = x.numel() // max(x.shape[-1], 1)
            if not torch.is_grad_enabled() and weights.merged_is_cheaper(tokens, a.shape[1], b.shape[0], self.r, False):
                # Inference over many tokens (an eval pass, a long prefill): one GEMM with W + s B A
                # instead of the base GEMM plus two skinny ones over every token; the same to rounding.
                linear = cast(nn.Linear, base)  # fusable_linear: exactly an nn.Linear
                return F.linear(x, torch.addmm(linear.weight, b, a, alpha=self.scaling), linear.bias)
            return fused.FusedLoraLinear.apply(x, base.weight, base.bias, a, b, self.scaling)
        return super().forward(x, inner, base)

    def lora_delta(self, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        h = F.linear(h, self.lora_A.weight)
        b = self.lora_B.weight
        if out.dtype == b.dtype:
            # One fused GEMM: out + s * h @ B^T, with the scale applied inside.
            flat = torch.addmm(out.reshape(-1, out.shape[-1]), h.reshape(-1, h.shape[-1]), b.t(), alpha=self.scaling)
            return flat.view(out.shape)
        return out + (F.linear(h, b) * self.scaling).to(out.dtype)

    def base_apply(self, base: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weights.read_weight(base).to(x.dtype))

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling


class LoraEmbedding(LoraAdapter):
    mixed_forward = staticmethod(mixed_embedding)
    factor_names = ("lora_embedding_A", "lora_embedding_B")
    feature_dim = 1  # canonical weight is (num_embeddings, dim): features are columns

    def __init__(self, base: nn.Embedding, r: int, alpha: float, dropout: float, rs: bool) -> None:
        super().__init__(r, alpha, dropout, rs)
        # PEFT applies no dropout to embedding LoRA (the input is token ids).
        self.lora_dropout = nn.Identity()
        self.padding_idx = base.padding_idx
        self.max_norm = base.max_norm
        self.norm_type = base.norm_type
        self.scale_grad_by_freq = base.scale_grad_by_freq
        self.sparse = base.sparse
        self.lora_embedding_A = nn.Parameter(torch.randn(r, base.num_embeddings, dtype=torch.float32))
        self.lora_embedding_B = nn.Parameter(torch.randn(base.embedding_dim, r, dtype=torch.float32))

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lora_embedding_A, self.lora_embedding_B

    def reset(self, init: bool | str) -> None:
        if init is False:
            return
        nn.init.zeros_(self.lora_embedding_A)
        nn.init.normal_(self.lora_embedding_B)

    def lora_input(self, x: torch.Tensor) -> torch.Tensor:
        return x  # token ids: no cast, no dropout

    def embed(self, ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return F.embedding(
            ids, table, self.padding_idx, self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse
        )

    def lora_delta(self, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        rows = self.embed(h, self.lora_embedding_A.t())
        return out + (F.linear(rows, self.lora_embedding_B) * self.scaling).to(out.dtype)

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_embedding_B @ self.lora_embedding_A).t() * self.scaling


class LoraConv(LoraAdapter):
    mixed_forward = staticmethod(mixed_conv)

    def __init__(self, base: nn.Conv1d | nn.Conv2d | nn.Conv3d, r: int, alpha: float, dropout: float, rs: bool):
        super().__init__(r, alpha, dropout, rs)
        conv: Any = type(base)  # the same ConvNd class as the base
        ones = (1,) * (base.weight.dim() - 2)
        self.lora_A = conv(base.in_channels, r, base.kernel_size, base.stride, base.padding, bias=False)
        self.lora_B = conv(r, base.out_channels, ones, ones, bias=False)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lora_A.weight, self.lora_B.weight

    def reset(self, init: bool | str) -> None:
        reset_factors(self.lora_A.weight, self.lora_B.weight, self.r, init)

    def forward(
        self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor], base: nn.Module | None = None
    ) -> torch.Tensor:
        a = self.lora_A.weight
        if inner is base and self.dora is None and self.dropout_p == 0 and weights.fusable_linear(base, x, a):
            return fused.FusedLoraLinear.apply(x, base.weight, base.bias, a, self.lora_B.weight, self.scaling)
        return super().forward(x, inner, base)

    def lora_delta(self, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        delta = self.lora_B(self.lora_A(h))
        return out + (delta * self.scaling).to(out.dtype)

    def magnitude_shape(self, features: int) -> tuple[int, ...]:
        return (1, features, *[1] * (self.lora_A.weight.dim() - 2))  # (1, out, 1, ...): PEFT's layout

    def base_apply(self, base: nn.Module, x: torch.Tensor) -> torch.Tensor:
        assert isinstance(base, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
        conv = _CONV_FN[base.weight.dim() - 2]
        return conv(x, base.weight.to(x.dtype), None, base.stride, base.padding, base.dilation, base.groups)

    def delta_weight(self) -> torch.Tensor:
        a = self.lora_A.weight  # (r, in, *k)
        b = self.lora_B.weight.flatten(1)  # (out, r)
        return (b @ a.flatten(1)).view(b.shape[0], *a.shape[1:]) * self.scaling


def create_lora(base: nn.Module, name: str, config: LoraConfig, shared: None = None) -> LoraAdapter:
    """Build the LoRA adapter that fits ``base`` (the module ``name`` of the model).

    Inits that decompose the base weight (PiSSA, OLoRA) rewrite it here, before DoRA (if on)
    takes its magnitude from the weight the adapter will see. ``shared`` is the result of the
    method's ``create_shared`` hook (``init.check_targets``), always None: LoRA layers share nothing.
    """
    r, alpha = config.rank_and_alpha(name)
    args = (r, alpha, config.lora_dropout, config.use_rslora)
    params = targeting.parameters_of(name, base, config.target_parameters) if config.target_parameters else []
    if params:  # a module reached through target_parameters (see params.py)
        from deltatune.methods.lora.params import create_parameter_lora

        return create_parameter_lora(base, name, params, r, alpha, config.use_rslora, config.init_lora_weights)
    if config.use_dora and isinstance(base, nn.MultiheadAttention):
        raise UnsupportedLayerError(
            f"DoRA (use_dora=True) is not available for {name} (nn.MultiheadAttention), as in PEFT; "
            "add it to exclude_modules, or use a plain LoRA (use_dora=False) for this adapter."
        )
    init = config.init_lora_weights
    special = lora_init.is_special(init)
    # Build on the base's device: on "meta" nothing is allocated, so injection stays fast.
    with torch.device(weights.module_device(base)):
        adapter = _build(base, name, args)
        if special and not isinstance(adapter, LoraLinear):
            lora_init.check_layer(adapter, name, init)
            adapter.reset(True)  # embeddings: the default init, as PEFT does
        else:
            adapter.reset(False if special else init)
    adapter = adapter.to(dtype=weights.adapter_dtype(base))
    if special and isinstance(adapter, LoraLinear):
        lora_init.initialise(adapter, base, name, init)  # type: ignore[arg-type]
    if config.use_dora:
        dora.attach(adapter, base)
    return adapter


def _build(base: nn.Module, name: str, args: tuple[int, float, float, bool]) -> LoraAdapter:
    adapter: LoraAdapter
    if weights.is_linear(base):
        in_f, out_f = weights.linear_features(base)
        adapter = LoraLinear(in_f, out_f, *args)
    elif isinstance(base, nn.Embedding):
        adapter = LoraEmbedding(base, *args)
    elif isinstance(base, nn.MultiheadAttention):
        from deltatune.methods.lora.mha import LoraMultiheadAttention, check_mha

        check_mha(base, name)
        adapter = LoraMultiheadAttention(base, *args)
    elif isinstance(base, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        if base.groups != 1 or any(d != 1 for d in base.dilation) or isinstance(base.padding, str):
            raise UnsupportedLayerError(
                f"LoRA supports convolutions with groups=1, dilation=1 and numeric padding; {name} has "
                f"groups={base.groups}, dilation={base.dilation}, padding={base.padding!r}. "
                "Leave it out with exclude_modules."
            )
        adapter = LoraConv(base, *args)
    else:
        raise UnsupportedLayerError(
            f"LoRA cannot adapt {name} ({type(base).__name__}); it supports Linear, Embedding, Conv1d/2d/3d, "
            "GPT-2 Conv1D and MultiheadAttention. Remove it from target_modules or add it to exclude_modules."
        )
    return adapter


def supports_lora(module: nn.Module) -> bool:
    return weights.layer_kind(module) is not None or isinstance(module, nn.MultiheadAttention)
