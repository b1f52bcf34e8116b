"""Adapter methods. Importing this package registers every built-in method."""

from deltatune.methods import (  # noqa: F401
    adalora,
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
