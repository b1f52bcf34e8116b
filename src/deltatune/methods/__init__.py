"""Adapter methods. Importing this package registers every built-in method."""

from deltatune import prompt  # noqa: F401  (registers the prompt-learning family)
from deltatune.methods import (  # noqa: F401
    adalora,
    adaption_prompt,
    beft,
    boft,
    bottleneck,
    fourierft,
    hra,
    ia3,
    ln_tuning,
    loha,
    lokr,
    lora,
    oft,
    trainable_tokens,
    vera,
)
