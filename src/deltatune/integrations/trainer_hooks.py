"""A transformers ``TrainerCallback`` that runs deltatune's per-step hooks inside ``Trainer``.

Methods that change during training (AdaLoRA prunes ranks to a budget) need
``DeltaModel.on_optimizer_step(global_step)`` after every optimizer step, while the gradients are
still there. Trainer's ``on_optimizer_step`` event is exactly that point (after ``optimizer.step()``,
before ``model.zero_grad()``), and its ``state.global_step`` then counts the steps done before this
one, the numbering the hook expects::

    from deltatune.integrations.trainer_hooks import DeltaTuneCallback
    trainer = Trainer(model=delta_model, args=args, train_dataset=data, callbacks=[DeltaTuneCallback()])

It is harmless for methods without a per-step hook, and passing it next to ``AdapterCheckpoints``
(which does the same) still runs the hook once per step. transformers is imported only by this module.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments


def find_delta_model(model: Any) -> Any:
    """The DeltaModel behind ``model`` (seen through ``.module`` wrappers such as DDP), or None."""
    from deltatune.model import DeltaModel

    seen = 0
    while isinstance(model, nn.Module) and seen < 8:
        if isinstance(model, DeltaModel):
            return model
        model = getattr(model, "module", None)
        seen += 1
    return None


_DONE = "_deltatune_trainer_step_done"


class DeltaTuneCallback(TrainerCallback):
    """Calls ``DeltaModel.on_optimizer_step(state.global_step)`` after each optimizer step."""

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        model = find_delta_model(kwargs.get("model"))
        if model is None:
            warnings.warn(
                "DeltaTuneCallback: the Trainer's model is not a deltatune DeltaModel; it does nothing.", stacklevel=2
            )
            return
        model.__dict__.pop(_DONE, None)
        for name in model.active_adapters:
            total = getattr(model.peft_config[name], "total_step", None)
            if total is not None and state.max_steps and total != state.max_steps:
                warnings.warn(
                    f"Adapter {name!r} plans its schedule over total_step={total} optimizer steps but the "
                    f"Trainer runs {state.max_steps}; set total_step={state.max_steps} so the schedule ends "
                    "with the training.",
                    stacklevel=2,
                )

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        model = find_delta_model(kwargs.get("model"))
        if model is not None and model.__dict__.get(_DONE) != state.global_step:
            model.__dict__[_DONE] = state.global_step  # another DeltaTuneCallback in the list skips this step
            model.on_optimizer_step(state.global_step)
