"""Train a DeltaModel under ``transformers.Trainer``: pass ``callbacks=[AdapterCheckpoints()]``.

What the Trainer does with a model it does not know (it recognises only ``PreTrainedModel`` and
PEFT's own classes, by type): it saves ``model.state_dict()`` to ``checkpoint-N/model.safetensors``
and, to resume or to load the best model at the end, loads that file back with
``load_state_dict(strict=False)``. The callback makes that path right for adapters:

- the model's ``state_dict()`` holds only its adapters' tensors (the frozen base is never
  written), and loading such a state dict does not report the base weights as missing;
- every checkpoint also gets the adapter in PEFT layout (``adapter_config.json``,
  ``adapter_model.safetensors``, ``README.md``; other adapters in subfolders), ready for
  ``DeltaModel.from_pretrained`` or PEFT;
- at the end of training the adapter is saved in PEFT layout to ``output_dir`` (``trainer.save_model``
  itself writes only a state dict for a model that is not a ``PreTrainedModel``);
- ``DeltaModel.on_optimizer_step(global_step)`` runs after each optimizer step (AdaLoRA's rank
  budget), as :class:`~deltatune.integrations.trainer_hooks.DeltaTuneCallback` does.

No Trainer setting needs changing: a DeltaModel's ``forward`` shows the wrapped model's signature
(see ``deltatune.signature``), so the Trainer keeps the right dataset columns and finds the labels.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.integrations.trainer_hooks import DeltaTuneCallback
from deltatune.model import DeltaModel

__all__ = ["AdapterCheckpoints", "adapter_state_keys"]


def find_delta_model(model: nn.Module | None) -> DeltaModel | None:
    """The DeltaModel itself, or the one inside a DDP/compile wrapper."""
    while model is not None and not isinstance(model, DeltaModel):
        inner = getattr(model, "module", None)
        model = inner if inner is not None else getattr(model, "_orig_mod", None)
    return model


def adapter_state_keys(model: DeltaModel) -> set[str]:
    """Keys of ``model.state_dict()`` that hold adapter tensors (every adapter, buffers included)."""
    from deltatune.checkpoint import adapter_state

    ids = {id(t) for name in model.peft_config for t in adapter_state(model, name).values()}
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    return {key for key, tensor in named if id(tensor) in ids}


class AdapterCheckpoints(DeltaTuneCallback):
    """Trainer checkpoints of a DeltaModel: the adapter only, in PEFT layout too; resume and best model work.

    It is a :class:`~deltatune.integrations.trainer_hooks.DeltaTuneCallback` too (per-step hooks such
    as AdaLoRA's budget): pass this one alone, not both, or those hooks would run twice a step.
    """

    def __init__(self) -> None:
        super().__init__()
        self._handles: list[Any] = []
        self._model: DeltaModel | None = None

    # ------------------------------------------------------------------ model side
    def attach(self, model: DeltaModel) -> None:
        """Make ``model.state_dict()`` adapter-only and ``load_state_dict`` quiet about the frozen base."""
        if self._model is model:
            return
        self.detach()
        self._model = model
        self._handles = [
            model.register_state_dict_post_hook(_adapter_only_state),
            model.register_load_state_dict_post_hook(_ignore_frozen_missing),
        ]

    def detach(self) -> None:
        """Undo :meth:`attach`: the model's state_dict() is the full one again."""
        for handle in self._handles:
            handle.remove()
        self._handles, self._model = [], None

    # ------------------------------------------------------------------ Trainer events
    def on_init_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kw: Any) -> None:
        delta = find_delta_model(model)
        if delta is None:
            raise DeltatuneError(
                f"AdapterCheckpoints needs a DeltaModel (deltatune.wrap(model, config)); the Trainer has "
                f"{type(model).__name__}."
            )
        self.attach(delta)

    def on_save(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kw: Any) -> None:
        delta = find_delta_model(model)
        if delta is None or not args.should_save:
            return
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if os.path.isdir(folder):
            delta.save_pretrained(folder)

    def on_train_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kw: Any) -> None:
        """The trained adapter (the best one with ``load_best_model_at_end``) in PEFT layout in ``output_dir``.

        ``Trainer.save_model`` cannot write it there (it saves a plain state dict for any model that is not a
        ``PreTrainedModel``), so the callback does at the end of training."""
        delta = find_delta_model(model)
        if delta is not None and args.should_save:
            delta.save_pretrained(args.output_dir)


def _adapter_only_state(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    assert isinstance(module, DeltaModel)
    keep = adapter_state_keys(module)
    for key in [k for k in state if k.startswith(prefix) and k[len(prefix) :] not in keep]:
        del state[key]


def _ignore_frozen_missing(module: nn.Module, incompatible: Any) -> None:
    """A checkpoint of adapters only leaves the frozen base "missing"; that is expected, not an error."""
    assert isinstance(module, DeltaModel)
    keep = adapter_state_keys(module)
    names = {k for k, _ in module.named_parameters(remove_duplicate=False)} | {
        k for k, _ in module.named_buffers(remove_duplicate=False)
    }
    base = names - keep
    missing = incompatible.missing_keys
    missing[:] = [k for k in missing if not _endswith_any(k, base)]


def _endswith_any(key: str, names: set[str]) -> bool:
    """``key`` is one of ``names``, possibly under a wrapper's prefix (``module.`` for DDP)."""
    parts = key.split(".")
    return any(".".join(parts[i:]) in names for i in range(len(parts)))
