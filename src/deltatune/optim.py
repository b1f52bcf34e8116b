"""Optimizers built for adapters.

LoRA+ (Hayou et al., "LoRA+: Efficient Low Rank Adaptation of Large Models", 2024): B should
learn faster than A, by a fixed ratio (16 by default). :func:`loraplus` builds an optimizer with
these parameter groups, the same ones PEFT's ``create_loraplus_optimizer`` makes:

==========================  ===================  ==================
parameters                  learning rate        weight decay
==========================  ===================  ==================
LoRA A (dense, conv)        ``lr``               ``weight_decay``
LoRA A and B of embeddings  ``lr_embedding``     ``weight_decay``
LoRA B, other vectors       ``lr * ratio``       ``weight_decay``
biases, LayerNorm params    ``lr * ratio``       0
other trainable matrices    ``lr``               ``weight_decay``
==========================  ===================  ==================

"Other vectors" are the remaining trainable 1-D parameters, e.g. DoRA magnitudes. Parameters are
sorted by what they are (the adapters' factors, the modules' biases), never by their names; a
convolution's DoRA magnitude, stored (1, out, 1, ...), counts as the vector it is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from deltatune.errors import ConfigError, DeltatuneError

__all__ = ["loraplus"]


def loraplus(
    model: nn.Module,
    lr: float,
    ratio: float = 16.0,
    weight_decay: float = 0.0,
    optimizer_cls: type[torch.optim.Optimizer] = torch.optim.AdamW,
    *,
    lr_embedding: float = 1e-6,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """An optimizer over ``model``'s trainable parameters with LoRA+ learning rates (table above).

    ``kwargs`` go to ``optimizer_cls`` (e.g. ``betas``, ``eps``, ``fused``).
    """
    if not lr > 0 or not ratio > 0:
        raise ConfigError(f"loraplus needs lr > 0 and ratio > 0, got lr={lr!r}, ratio={ratio!r}.")
    from deltatune.methods.lora.adapter import LoraAdapter, LoraEmbedding

    role: dict[int, str] = {}
    for module in model.modules():
        if isinstance(module, LoraAdapter):
            a, b = module.factors()
            if isinstance(module, LoraEmbedding):
                role[id(a)] = role[id(b)] = "embedding"
            else:
                role[id(a)], role[id(b)] = "a", "b"
            magnitude = module._parameters.get("lora_magnitude_vector")
            if magnitude is not None:
                role[id(magnitude)] = "b"
    no_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            no_decay.update(id(p) for p in module.parameters(recurse=False))
        bias = module._parameters.get("bias")
        if bias is not None:
            no_decay.add(id(bias))

    groups: dict[str, list[nn.Parameter]] = {"a": [], "embedding": [], "b": [], "b_no_decay": []}
    seen: set[int] = set()
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        kind = role.get(id(param)) or ("b" if param.dim() == 1 else "a")
        if kind == "b" and id(param) in no_decay:
            kind = "b_no_decay"
        groups[kind].append(param)
    settings = {
        "a": (lr, weight_decay),
        "embedding": (lr_embedding, weight_decay),
        "b": (lr * ratio, weight_decay),
        "b_no_decay": (lr * ratio, 0.0),
    }
    param_groups = [
        {"params": params, "lr": settings[kind][0], "weight_decay": settings[kind][1]}
        for kind, params in groups.items()
        if params
    ]
    if not param_groups:
        raise DeltatuneError("The model has no trainable parameters; add an adapter (dt.wrap) before loraplus().")
    return optimizer_cls(param_groups, lr=lr, **kwargs)  # type: ignore[call-arg]
