"""One registry: method name -> (config class, adapter factory).

A method registers itself once, in its own package, with :func:`register_method`. The test
matrix, the checkpoint loader and the docs list read this registry, so a new method cannot be
forgotten by any of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deltatune.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from deltatune.config import AdapterConfig
    from deltatune.layer import Adapter
    from deltatune.model import DeltaModel


# (base module, its full name in the model, the config) -> a new adapter for that module.
AdapterFactory = Callable[["nn.Module", str, "AdapterConfig"], "Adapter"]
# (the model, the config, {name: base module} of every target) -> a module holding the tensors
# that all layers of one adapter share (e.g. VeRA's random projections), or None.
SharedFactory = Callable[["nn.Module", "AdapterConfig", "dict[str, nn.Module]"], "nn.Module | None"]


@dataclass(frozen=True)
class Method:
    """What the core needs to know about one adapter method."""

    peft_type: str
    config_cls: type[AdapterConfig]
    create: AdapterFactory
    # Can this method's adapter sit on this base module? Used by targeting and its errors.
    supports: Callable[[nn.Module], bool]
    # Module types the method can adapt, as plain words for error messages.
    layer_types: tuple[str, ...]
    # Optional. When set, it runs once per adapter before the per-layer factories, its module
    # is kept in DeltaModel.shared_by_adapter[adapter name], and ``create`` gets it as ``shared=``.
    # Its state_dict saves as ``base_model.<key>``; its buffers (rebuilt from the config) may
    # be absent from a checkpoint, its parameters may not.
    create_shared: SharedFactory | None = None
    # Optional, for methods that change during training (AdaLoRA's rank budget): called by
    # DeltaModel.on_optimizer_step(global_step) as (model, adapter name, global_step) for each active
    # trainable adapter, after optimizer.step() and before zero_grad() (gradients still there).
    on_optimizer_step: Callable[[DeltaModel, str, int], None] | None = None
    # Optional: a regulariser (model, adapter name) -> scalar or None that DeltaModel.forward adds to
    # the output's ``.loss`` in training mode for each active trainable adapter (AdaLoRA's orthogonality).
    training_loss: Callable[[DeltaModel, str], torch.Tensor | None] | None = None
    # Optional: (model, adapter name, {checkpoint key: tensor}) -> the tensors to save, for methods
    # whose checkpoint form differs from their training form (AdaLoRA saves only the kept ranks).
    checkpoint_tensors: Callable[[DeltaModel, str, dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    # Optional, for methods that adapt the whole model rather than layers (the prompt-learning family):
    # (model, config) -> a module kept in DeltaModel.prompt_by_adapter that runs the model's forward and
    # generate while its adapter is active (see deltatune.prompt). Such methods target no layer.
    create_prompt: Callable[[nn.Module, AdapterConfig], nn.Module] | None = None
    # Optional: (model, config) -> the names of the modules to adapt, for methods whose targeting is not
    # targeting.find_targets' rule (the adaption prompt adapts the top ``adapter_layers`` attention modules).
    # It replaces the generic default too: with ``target_modules=None`` it sets the value PEFT would write.
    select_targets: Callable[[nn.Module, AdapterConfig], list[str]] | None = None


_METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add a method; registering the same peft_type twice is a programming error."""
    if method.peft_type in _METHODS:
        raise ValueError(f"peft_type {method.peft_type!r} is already registered")
    _METHODS[method.peft_type] = method
    return method


def get_method(peft_type: object) -> Method:
    """The method for ``peft_type``; an unknown one lists the supported types."""
    _load_builtin_methods()
    if not isinstance(peft_type, str) or peft_type not in _METHODS:
        raise ConfigError(
            f"Unknown peft_type {peft_type!r}; deltatune supports {sorted(_METHODS)}. "
            "Check the adapter_config.json, or upgrade deltatune if the method is new."
        )
    return _METHODS[peft_type]


def method_for_config(config: AdapterConfig) -> Method:
    return get_method(type(config).peft_type)


def registered_methods() -> dict[str, Method]:
    """All registered methods by peft_type."""
    _load_builtin_methods()
    return dict(_METHODS)


def _load_builtin_methods() -> None:
    import deltatune.methods  # noqa: F401  (importing registers the built-in methods)
