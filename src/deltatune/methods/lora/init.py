"""LoRA inits that look at the base weight, and turning their result back into a plain LoRA.

- PiSSA (Meng et al., "PiSSA: Principal Singular Values and Singular Vectors Adaptation of Large
  Language Models", 2024): with ``W0 = U S V^T``, ``B = U_r sqrt(S_r / s)`` (out, r) and
  ``A = sqrt(S_r / s) V_r^T`` (r, in); ``"pissa_niter_K"`` takes U_r, S_r, V_r from a randomized
  SVD with K subspace iterations (Halko et al.), much faster on large weights.
- OLoRA (Büyükakyüz, "OLoRA: Orthonormal Low-Rank Adaptation of Large Language Models", 2024):
  with ``W0 = Q R``, ``B = Q[:, :r]`` (out, r) and ``A = R[:r]`` (r, in).
- Both then store the residual ``W0 <- W0 - s B A`` in the base layer, so the adapted model
  starts exactly as the base model while training moves the principal part of W0.
- ``"orthogonal"``: A and B from orthonormal rows of one random r x r matrix (odd rows for A,
  even rows for B), scaled by 1/10, so ``B A = 0`` although neither factor is zero; the base
  weight is untouched. Needs an even r.

These inits apply to dense layers (Linear, GPT-2 Conv1D); an embedding gets the default init
(as in PEFT) and a convolution is refused.

Conversion (``save_pretrained(dir, path_initial_model_for_weight_conversion=init_dir)``, as in
PEFT): with the factors ``A0, B0`` saved right after init and ``A, B`` after training, the change
relative to the original weights is ``s (B A - B0 A0) = s [B | -B0] [A ; A0]``: a plain LoRA of
rank 2r with the same scale (alpha doubled, or times sqrt(2) with rsLoRA), which loads on the
untouched base model.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from typing import TYPE_CHECKING

import torch

from deltatune import weights
from deltatune.config import AdapterConfig
from deltatune.errors import CheckpointError, ConfigError, UnsupportedLayerError
from deltatune.methods.lora.config import LoraConfig, pissa_niter

if TYPE_CHECKING:
    from torch import nn

    from deltatune.methods.lora.adapter import LoraAdapter, LoraLinear
    from deltatune.model import DeltaModel

_PREFIX = "base_model.model."


def is_special(init: bool | str) -> bool:
    """Inits handled here (the rest is ``reset`` on the adapter)."""
    return isinstance(init, str) and init != "gaussian"


def check_layer(adapter: LoraAdapter, name: str, init: bool | str) -> None:
    """Embeddings fall back to the default init (PEFT's behaviour); convolutions are refused."""
    from deltatune.methods.lora.adapter import LoraEmbedding

    if not isinstance(adapter, LoraEmbedding):
        raise UnsupportedLayerError(
            f"init_lora_weights={init!r} works on Linear and GPT-2 Conv1D layers, but {name} is a "
            f"{type(adapter).__name__.removeprefix('Lora')} layer. Exclude it (exclude_modules) or use "
            "init_lora_weights=True for this adapter."
        )


def check_targets(model: nn.Module, config: LoraConfig, bases: dict[str, nn.Module]) -> None:
    """Refuse an init that cannot apply to every target *before* any base weight is rewritten.

    PiSSA / OLoRA rewrite base weights as each adapter is built; checking all targets first keeps
    a failed ``add_adapter`` from leaving the model half-decomposed. Registered as the method's
    ``create_shared`` hook, which runs once before the per-layer factories; it shares nothing.
    It also refuses targeting the ``out_proj`` of an ``nn.MultiheadAttention`` (see ``mha.py``).
    """
    from deltatune.methods.lora.mha import check_mha_targets

    check_mha_targets(model, bases)
    init = config.init_lora_weights
    if not is_special(init):
        return None
    for name, base in bases.items():
        kind = weights.layer_kind(base)
        if kind == "conv" or kind is None:
            raise UnsupportedLayerError(
                f"init_lora_weights={init!r} works on Linear and GPT-2 Conv1D layers, but {name} is a "
                f"{type(base).__name__}. Exclude it (exclude_modules) or use init_lora_weights=True for this adapter."
            )
        if kind == "linear" and init != "orthogonal":
            _check_decomposable(weights.read_weight(base), config.rank_and_alpha(name)[0], name, init)  # type: ignore[arg-type]
    return None


def _check_decomposable(weight: torch.Tensor, r: int, name: str, init: str) -> None:
    if weight.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise ConfigError(
            f"init_lora_weights={init!r} needs a float base weight, but {name} stores {weight.dtype}. "
            "Decompose the float model first, then quantize the residual."
        )
    if r > min(weight.shape):
        raise ConfigError(
            f"init_lora_weights={init!r} with r={r} exceeds the rank of {name}'s weight {tuple(weight.shape)}; "
            f"use r <= {min(weight.shape)} for this module (rank_pattern)."
        )


@torch.no_grad()
def initialise(adapter: LoraLinear, base: nn.Module, name: str, init: str) -> None:
    """Set A and B from the base weight (and for PiSSA / OLoRA, rewrite the base weight)."""
    a_param, b_param = adapter.lora_A.weight, adapter.lora_B.weight
    if a_param.device.type == "meta":
        return  # nothing to decompose; the values will come from a checkpoint
    r, s = adapter.r, adapter.scaling
    if init == "orthogonal":
        q, _ = torch.linalg.qr(torch.randn(r, r))
        a = (torch.randn(a_param.shape[1], r // 2) @ q[0::2]).t() / 10.0
        b = (torch.randn(r // 2, b_param.shape[0]).t() @ q[1::2]) / 10.0
        a_param.copy_(a)
        b_param.copy_(b)
        return
    stored = weights.read_weight(base)
    _check_decomposable(stored, r, name, init)
    w = stored.to(a_param.dtype)  # canonical (out, in), in fp32 (fp64 for a fp64 base)
    if init == "olora":
        q, rr = torch.linalg.qr(w)
        b, a = q[:, :r], rr[:r]
    else:
        niter = pissa_niter(init)
        if niter is None:
            u, sv, vh = torch.linalg.svd(w, full_matrices=False)
            u, sv, vh = u[:, :r], sv[:r], vh[:r]
        else:
            u, sv, v = torch.svd_lowrank(w, q=r, niter=niter)
            vh = v.t()
        root = (sv / s).sqrt()
        a = root[:, None] * vh
        b = u * root[None, :]
    a_param.copy_(a)
    b_param.copy_(b)
    weights.write_weight(base, w - (s * b) @ a, what=f"the {init} residual")


# --------------------------------------------------------------------------------- conversion
def convert_to_plain_lora(
    model: DeltaModel,
    adapter_name: str,
    tensors: dict[str, torch.Tensor],
    config: AdapterConfig,
    initial_folder: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], AdapterConfig]:
    """The tensors and config of a rank-2r LoRA equal to the trained change from the original weights.

    ``initial_folder`` holds this adapter as saved right after its init (before training);
    ``tensors`` (checkpoint key -> tensor) and ``config`` are what would be saved without conversion.
    """
    from deltatune.checkpoint import read_tensors
    from deltatune.methods.lora.adapter import LoraAdapter

    if not isinstance(config, LoraConfig):
        raise ConfigError(
            f"path_initial_model_for_weight_conversion converts LoRA adapters; {adapter_name!r} is "
            f"{config.peft_type}. Save it without that argument."
        )
    if config.use_dora:
        raise ConfigError(
            f"Adapter {adapter_name!r} uses DoRA, whose norm depends on the base weight, so it cannot be "
            "rewritten as a LoRA on the original weights. Save it without path_initial_model_for_weight_conversion."
        )
    if config.init_lora_weights is False:
        raise ConfigError(
            f"Adapter {adapter_name!r} was created with init_lora_weights=False (random A and B on an unchanged "
            "base), so the conversion would subtract a change that was never applied. Save it without conversion."
        )
    if not config.mutates_base:
        warnings.warn(
            f"Adapter {adapter_name!r} (init_lora_weights={config.init_lora_weights!r}) did not change the base "
            "weights; the conversion still gives a valid adapter of twice the rank.",
            stacklevel=4,
        )
    initial = read_tensors(initial_folder)
    out = dict(tensors)
    # Nested LoRA factors count too (an attention's adapter holds its out_proj's as a submodule).
    factors = [
        (f"{path}.{sub}" if sub else path, module)
        for path, adapter in model.adapter_modules(adapter_name)
        for sub, module in adapter.named_modules()
        if isinstance(module, LoraAdapter)
    ]
    for path, adapter in factors:
        a_key, b_key = (f"{_PREFIX}{path}.{n}" for n in adapter.factor_names)
        for key in (a_key, b_key):
            if key not in initial or initial[key].shape != tensors[key].shape:
                found = tuple(initial[key].shape) if key in initial else "missing"
                raise CheckpointError(
                    f"{initial_folder} does not hold this adapter's initial factors: {key} is {found}, expected "
                    f"{tuple(tensors[key].shape)}. Pass the folder saved right after creating {adapter_name!r}."
                )
        a0 = initial[a_key].to(tensors[a_key].dtype)
        b0 = initial[b_key].to(tensors[b_key].dtype)
        out[a_key] = torch.cat([tensors[a_key], a0], dim=0).contiguous()
        out[b_key] = torch.cat([tensors[b_key], -b0], dim=1).contiguous()
    return out, _doubled(config)


def _doubled(config: LoraConfig) -> LoraConfig:
    """Same scale at twice the rank: s = alpha / r (or alpha / sqrt(r) with rsLoRA)."""
    new = copy.deepcopy(config)
    factor = math.sqrt(2.0) if config.use_rslora else 2.0
    new.r = config.r * 2
    new.lora_alpha = config.lora_alpha * factor
    new.rank_pattern = {k: 2 * v for k, v in config.rank_pattern.items()}
    new.alpha_pattern = {k: v * factor for k, v in config.alpha_pattern.items()}
    new.init_lora_weights = True
    return new
