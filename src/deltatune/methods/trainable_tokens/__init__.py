"""Trainable tokens: train chosen rows of the embedding (PEFT's TRAINABLE_TOKENS)."""

from deltatune.methods.trainable_tokens.adapter import (
    LAYER_TYPES,
    TiedTokenRows,
    TokenEmbedding,
    TokenHead,
    create_tied_rows,
    create_trainable_tokens,
    supports_trainable_tokens,
)
from deltatune.methods.trainable_tokens.config import TrainableTokensConfig
from deltatune.registry import Method, register_method

register_method(
    Method(
        peft_type=TrainableTokensConfig.peft_type,
        config_cls=TrainableTokensConfig,
        create=create_trainable_tokens,  # type: ignore[arg-type]
        supports=supports_trainable_tokens,
        layer_types=LAYER_TYPES,
        create_shared=create_tied_rows,  # type: ignore[arg-type]
    )
)

__all__ = ["TiedTokenRows", "TokenEmbedding", "TokenHead", "TrainableTokensConfig"]
