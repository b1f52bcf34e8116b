"""AdaLoraConfig: PEFT's field names and JSON values (``"peft_type": "ADALORA"``)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

from deltatune.config import AdapterConfig, _help
from deltatune.errors import ConfigError
from deltatune.methods.lora.config import LoraConfig

BIAS_MODES = ("none", "all", "lora_only")
# LoRA fields PEFT writes for AdaLoRA too but AdaLoRA never reads: their defaults (a warning when set).
_IGNORED_DEFAULTS: dict[str, Any] = {"r": 8, "use_rslora": False, "alpha_pattern": {}}


@dataclass
class AdaLoraConfig(AdapterConfig):
    """Adaptive budget allocation: ``h = W0 x + s / (init_r + 1e-5) * P (Λ ⊙ Q) x`` with a rank budget
    that shrinks from ``init_r`` to ``target_r`` per layer (on average) during training.

    The schedule has three phases over ``total_step`` optimizer steps: ``tinit`` warm-up steps at full
    rank, a cubic budget decrease until step ``total_step - tfinal`` (re-allocated every ``deltaT``
    steps), then ``tfinal`` steps with the final ranks fixed. It runs from
    ``DeltaModel.on_optimizer_step(step)`` (the training loop or ``integrations.trainer_hooks``).

    The orthogonality penalty (``orth_reg_weight``) is added by ``DeltaModel.forward`` to the output's
    ``.loss`` in training mode (a loop computing its own loss adds ``model.training_loss()``). PEFT
    adds it in its task-specific model classes only (``task_type`` set), in eval mode too; here eval
    losses stay the task's loss.
    """

    peft_type: ClassVar[str] = "ADALORA"
    unsupported_fields: ClassVar[dict[str, Any]] = {
        **LoraConfig.unsupported_fields,
        "use_dora": False,
        "target_parameters": None,  # a LoraConfig field, not an AdaLoRA one
    }

    target_r: int = _help("Average rank per adapted layer at the end of the budget schedule.", 8)
    init_r: int = _help("Rank of every adapted layer at the start (the budget is init_r per layer).", 12)
    tinit: int = _help("Warm-up optimizer steps at full rank before the budget starts to shrink.", 0)
    tfinal: int = _help("Last optimizer steps trained with the final ranks fixed.", 0)
    deltaT: int = _help("Re-allocate the ranks every deltaT optimizer steps during the budget phase.", 1)
    beta1: float = _help("EMA factor smoothing the sensitivity |w * grad| of each weight, in (0, 1).", 0.85)
    beta2: float = _help("EMA factor of the sensitivity's uncertainty, in (0, 1).", 0.85)
    orth_reg_weight: float = _help(
        "Weight of the orthogonality penalty on P and Q added to the model output's loss in training.", 0.5
    )
    total_step: int | None = _help(
        "Optimizer steps of the whole training run (required: the budget schedule is laid out over it).", None
    )
    rank_pattern: dict[str, list[bool]] | None = _help(
        "Ranks kept per layer, written by the allocator: {'<module path>.lora_E': [keep, ...] (init_r flags)}.",
        None,
    )
    lora_alpha: float = _help("Scale numerator: the update is multiplied by lora_alpha / init_r.", 8)
    lora_dropout: float = _help("Dropout on the adapter's input during training.", 0.0)
    fan_in_fan_out: bool = _help("Set for layers storing (in, out) weights, e.g. GPT-2 Conv1D (auto-detected).", False)
    bias: str = _help("Which biases train: 'none', 'all', or 'lora_only' (biases of adapted layers).", "none")
    init_lora_weights: bool = _help(
        "True: Λ = 0 (starts as the base model), P and Q ~ N(0, 0.02^2); False: P, Λ, Q ~ N(0, 1).", True
    )
    r: int = _help("Not used by AdaLoRA (kept for PEFT's JSON); the starting rank is init_r.", 8)
    use_rslora: bool = _help("Not used by AdaLoRA (kept for PEFT's JSON).", False)
    alpha_pattern: dict[str, float] = _help("Not used by AdaLoRA (kept for PEFT's JSON).", factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("target_r", "init_r", "tinit", "tfinal", "deltaT"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"AdaLoraConfig.{name} must be a non-negative integer, got {value!r}.")
        if self.init_r == 0:
            raise ConfigError("AdaLoraConfig.init_r must be at least 1 (the starting rank of every layer).")
        if self.deltaT == 0:
            raise ConfigError("AdaLoraConfig.deltaT must be at least 1 (re-allocate every deltaT steps).")
        if self.target_r > self.init_r:
            raise ConfigError(
                f"AdaLoraConfig.target_r={self.target_r} is above init_r={self.init_r}: the budget only shrinks. "
                "Set target_r <= init_r."
            )
        self._check_schedule()
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < value < 1.0:
                raise ConfigError(f"AdaLoraConfig.{name} must be strictly between 0 and 1, got {value!r}.")
        weight = self.orth_reg_weight
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"AdaLoraConfig.orth_reg_weight must be a finite number >= 0, got {weight!r}.")
        alpha = self.lora_alpha
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha):
            raise ConfigError(f"AdaLoraConfig.lora_alpha must be a finite number, got {alpha!r}.")
        if not isinstance(self.lora_dropout, (int, float)) or not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"AdaLoraConfig.lora_dropout must be in [0, 1), got {self.lora_dropout!r}.")
        if self.bias not in BIAS_MODES:
            raise ConfigError(f"AdaLoraConfig.bias={self.bias!r} is unknown; use one of {list(BIAS_MODES)}.")
        for name in ("init_lora_weights", "fan_in_fan_out"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"AdaLoraConfig.{name} must be True or False, got {getattr(self, name)!r}.")
        if isinstance(self.target_modules, str) and (self.layers_to_transform is not None or self.layers_pattern):
            raise ConfigError(
                "AdaLoraConfig: layers_to_transform / layers_pattern cannot be used when target_modules is a "
                "regex string; put the layer indexes into the regex, or give target_modules as a list."
            )
        self._check_rank_pattern()
        ignored = [k for k, v in _IGNORED_DEFAULTS.items() if getattr(self, k) != v]
        if ignored:
            warnings.warn(
                f"AdaLoraConfig ignores {ignored} (LoRA fields); the starting rank is init_r and the scale "
                "lora_alpha / init_r.",
                stacklevel=3,
            )

    def _check_schedule(self) -> None:
        total = self.total_step
        if total is None or not isinstance(total, int) or isinstance(total, bool) or total <= 0:
            raise ConfigError(
                f"AdaLoraConfig.total_step must be the number of optimizer steps of the training run, got "
                f"{total!r}; e.g. total_step=len(train_dataloader) * epochs // grad_accum (or Trainer's max_steps)."
            )
        if self.tinit >= total - self.tfinal:
            raise ConfigError(
                f"AdaLoraConfig schedule leaves no budget phase: tinit={self.tinit} >= total_step - tfinal = "
                f"{total} - {self.tfinal}. Decrease tinit or tfinal, or increase total_step."
            )

    def _check_rank_pattern(self) -> None:
        pattern = self.rank_pattern
        if pattern is None:
            return
        if not isinstance(pattern, dict):
            raise ConfigError(f"AdaLoraConfig.rank_pattern must be None or a dict, got {type(pattern).__name__}.")
        for key, mask in pattern.items():
            if not isinstance(mask, list) or not all(isinstance(v, bool) for v in mask):
                raise ConfigError(
                    f"AdaLoraConfig.rank_pattern[{key!r}] must be a list of init_r booleans (the ranks kept), "
                    f"got {mask!r}. rank_pattern is written by the rank allocator; leave it None for a new adapter."
                )
            if len(mask) != self.init_r:
                raise ConfigError(
                    f"AdaLoraConfig.rank_pattern[{key!r}] has {len(mask)} flags but init_r={self.init_r}; "
                    "the config and the rank pattern come from different runs."
                )

    def kept_ranks(self, module_name: str) -> list[int]:
        """Indexes (among the init_r ranks) that the layer ``module_name`` holds after allocation."""
        mask = (self.rank_pattern or {}).get(f"{module_name}.lora_E")
        if mask is None:
            return list(range(self.init_r))
        return [i for i, keep in enumerate(mask) if keep]
