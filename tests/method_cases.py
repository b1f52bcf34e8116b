"""Per-method test cases: every registered method must appear here, or the suite fails.

A case builds a config for given targets, either as a no-op at init (``identity=True``, the
method's "starts as the base model" setting) or with random non-trivial weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import deltatune as dt


@dataclass(frozen=True)
class MethodCase:
    peft_type: str
    kinds: tuple[str, ...]  # layer kinds (see models.ModelCase.kind) the method supports
    config: Callable[..., dt.AdapterConfig]  # (targets, identity: bool, variant: int) -> config
    mergeable: bool = True
    mixed_batches: bool = False


def lora(targets: list[str] | str, identity: bool, variant: int = 0) -> dt.AdapterConfig:
    return dt.LoraConfig(
        target_modules=targets,
        r=(4, 2, 3)[variant % 3],
        lora_alpha=(8, 3, 5)[variant % 3],
        use_rslora=variant == 1,
        init_lora_weights=identity,
    )


METHOD_CASES = {
    "LORA": MethodCase("LORA", ("linear", "embedding", "conv", "gpt2_conv1d", "transformer"), lora, mixed_batches=True),
}
