"""LoraConfig: PEFT's field names and JSON values."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from deltatune.config import AdapterConfig, _help, pattern_value
from deltatune.errors import ConfigError

BIAS_MODES = ("none", "all", "lora_only")
INIT_MODES = (True, False, "gaussian", "pissa", "pissa_niter_<K>", "olora", "orthogonal")
_PISSA_NITER = re.compile(r"pissa_niter_(\d+)")


@dataclass
class LoraConfig(AdapterConfig):
    """Low-rank adaptation: ``h = W0 x + s * B A x`` with ``s = lora_alpha / r`` (rsLoRA: ``/ sqrt(r)``)."""

    peft_type: ClassVar[str] = "LORA"
    unsupported_fields: ClassVar[dict[str, Any]] = {
        "lora_bias": False,
        "layer_replication": None,
        "trainable_token_indices": None,
        "use_qalora": False,
        "megatron_config": None,
        "loftq_config": {},
        "eva_config": None,
        "corda_config": None,
        "lora_ga_config": None,
        "velora_config": None,
        "alora_invocation_tokens": None,
        "monteclora_config": None,
        "use_bdlora": None,
        "arrow_config": None,
        "kasa_config": None,
        # no behaviour when the features above are off:
        "megatron_core": "megatron.core",
        "qalora_group_size": 16,
        "ensure_weight_tying": False,
    }

    r: int = _help("Rank of the update.", 8)
    lora_alpha: float = _help("Scale numerator: the update is multiplied by lora_alpha / r.", 8)
    lora_dropout: float = _help("Dropout on the adapter's input during training.", 0.0)
    fan_in_fan_out: bool = _help("Set for layers storing (in, out) weights, e.g. GPT-2 Conv1D (auto-detected).", False)
    bias: str = _help("Which biases train: 'none', 'all', or 'lora_only' (biases of adapted layers).", "none")
    use_rslora: bool = _help("Scale by lora_alpha / sqrt(r) (rank-stabilised LoRA).", False)
    init_lora_weights: bool | str = _help(
        "True: B=0 (starts as the base model); 'gaussian': A ~ N(0, 1/r), B=0; False: random A and B; "
        "'pissa' / 'pissa_niter_K' (randomized SVD, K subspace iterations) / 'olora' (QR): A and B from the "
        "base weight, which keeps the rest; 'orthogonal': orthogonal A and B with B A = 0 (even r).",
        True,
    )
    use_dora: bool = _help("DoRA: learn a magnitude per output feature on top of the LoRA direction.", False)
    target_parameters: list[str] | None = _help(
        "Raw parameters to adapt, e.g. ['mlp.experts.gate_up_proj'] (fused MoE experts, 3-D (experts, out, in) "
        "or 2-D (out, in)); matched by name suffix; no dropout, DoRA or weight-decomposing init with them.",
        None,
    )
    rank_pattern: dict[str, int] = _help("Per-module rank: {regex on module name suffix: r}.", factory=dict)
    alpha_pattern: dict[str, float] = _help("Per-module alpha: {regex on module name suffix: alpha}.", factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            raise ConfigError(f"LoraConfig.r must be a positive integer, got {self.r!r}.")
        if not isinstance(self.lora_alpha, (int, float)) or not math.isfinite(self.lora_alpha):
            raise ConfigError(f"LoraConfig.lora_alpha must be a finite number, got {self.lora_alpha!r}.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"LoraConfig.lora_dropout must be in [0, 1), got {self.lora_dropout!r}.")
        if self.bias not in BIAS_MODES:
            raise ConfigError(f"LoraConfig.bias={self.bias!r} is unknown; use one of {list(BIAS_MODES)}.")
        if not _known_init(self.init_lora_weights):
            raise ConfigError(
                f"LoraConfig.init_lora_weights={self.init_lora_weights!r} is not supported; "
                f"use one of {list(INIT_MODES)} (K: a number of subspace iterations, e.g. 'pissa_niter_4')."
            )
        if not isinstance(self.use_dora, bool):
            raise ConfigError(f"LoraConfig.use_dora must be True or False, got {self.use_dora!r}.")
        for name, pattern in (("rank_pattern", self.rank_pattern), ("alpha_pattern", self.alpha_pattern)):
            if not isinstance(pattern, dict):
                raise ConfigError(f"LoraConfig.{name} must be a dict {{pattern: value}}, got {pattern!r}.")
            for key, value in pattern.items():
                _check_regex(name, key)
                if name == "rank_pattern" and (not isinstance(value, int) or value <= 0):
                    raise ConfigError(f"rank_pattern[{key!r}] must be a positive integer, got {value!r}.")
        self._check_target_parameters()
        if self.init_lora_weights == "orthogonal":
            odd = sorted({r for r in [self.r, *self.rank_pattern.values()] if r % 2})
            if odd:
                raise ConfigError(
                    f"init_lora_weights='orthogonal' needs an even rank, got r in {odd}; "
                    "use an even r (and even rank_pattern values) or another init."
                )

    def _check_target_parameters(self) -> None:
        if self.target_parameters is None:
            return
        if isinstance(self.target_parameters, (set, tuple)):
            self.target_parameters = sorted(self.target_parameters)
        if not isinstance(self.target_parameters, list) or not all(
            isinstance(t, str) and t for t in self.target_parameters
        ):
            raise ConfigError(
                f"LoraConfig.target_parameters must be a list of parameter names such as ['mlp.experts.gate_up_proj'], "
                f"got {self.target_parameters!r}."
            )
        # The update lives in the parameter itself, so nothing can act on an input (dropout, DoRA's
        # per-output norm of an input-dependent path) and nothing may decompose it (PiSSA/OLoRA/orthogonal).
        bad = {
            "lora_dropout": self.lora_dropout != 0,
            "use_dora": self.use_dora,
            "fan_in_fan_out": self.fan_in_fan_out,
            "init_lora_weights": self.init_lora_weights not in (True, False, "gaussian"),
        }
        wrong = [name for name, is_bad in bad.items() if is_bad]
        if wrong and self.target_parameters:
            raise ConfigError(
                f"LoraConfig.target_parameters cannot be combined with {wrong} (the update is added to the parameter "
                "itself, as in PEFT); use lora_dropout=0.0, use_dora=False, fan_in_fan_out=False and "
                "init_lora_weights True, False or 'gaussian', or target modules instead."
            )

    @property
    def mutates_base(self) -> bool:
        """Whether creating this adapter rewrites the base weights (PiSSA, OLoRA)."""
        init = self.init_lora_weights
        return isinstance(init, str) and (init == "olora" or init.startswith("pissa"))

    def rank_and_alpha(self, module_name: str) -> tuple[int, float]:
        """The rank and alpha for one module, after rank_pattern / alpha_pattern."""
        r = pattern_value(self.rank_pattern, module_name, self.r)
        alpha = pattern_value(self.alpha_pattern, module_name, self.lora_alpha)
        return int(r), float(alpha)


def _known_init(init: object) -> bool:
    if isinstance(init, bool):
        return True
    if not isinstance(init, str):
        return False
    return init in ("gaussian", "pissa", "olora", "orthogonal") or _PISSA_NITER.fullmatch(init) is not None


def pissa_niter(init: str) -> int | None:
    """K of 'pissa_niter_K' (None for the exact SVD of 'pissa')."""
    match = _PISSA_NITER.fullmatch(init)
    return int(match.group(1)) if match else None


def _check_regex(field_name: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{field_name} key {pattern!r} is not a valid regex: {exc}.") from exc
