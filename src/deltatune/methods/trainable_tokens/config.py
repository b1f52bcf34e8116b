"""TrainableTokensConfig: PEFT's field names and JSON values."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

from deltatune.config import AdapterConfig, _help
from deltatune.errors import ConfigError

# Fields of deltatune's AdapterConfig that PEFT's TrainableTokensConfig lacks: written only when
# set, since PEFT warns about keys it does not know.
_NOT_IN_PEFT = ("exclude_modules", "modules_to_save", "layers_to_transform", "layers_pattern")


@dataclass
class TrainableTokensConfig(AdapterConfig):
    """Train only the rows of chosen tokens in an embedding (and in the LM head tied to it).

    ``target_modules=None`` picks the model's input embedding (``get_input_embeddings()``).
    PEFT's config has no ``modules_to_save``: a head trained in full with this adapter (e.g. for
    ``task_type="SEQ_CLS"``) is saved by deltatune, but PEFT ignores it (with a warning).
    """

    peft_type: ClassVar[str] = "TRAINABLE_TOKENS"
    # Targeting also adapts the output head tied to the targeted input embedding (as PEFT does).
    follows_tied_head: ClassVar[bool] = True

    token_indices: list[int] = _help(
        "Indices (token ids) of the rows to train, e.g. of newly added tokens.", factory=list
    )
    init_weights: bool = _help(
        "True: the rows start as the embedding's own (starts as the base model); False: random rows.", True
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        indices = self.token_indices
        if isinstance(indices, tuple):
            indices = self.token_indices = list(indices)
        if not isinstance(indices, list) or not indices:
            raise ConfigError(
                f"TrainableTokensConfig.token_indices must be a non-empty list of token ids, got {indices!r}; "
                "e.g. token_indices=tokenizer.convert_tokens_to_ids(new_tokens)."
            )
        bad = [i for i in indices if not isinstance(i, int) or isinstance(i, bool) or i < 0]
        if bad:
            raise ConfigError(f"TrainableTokensConfig.token_indices must be non-negative integers; got {bad}.")
        if len(set(indices)) != len(indices):
            repeated = sorted(i for i, n in Counter(indices).items() if n > 1)
            raise ConfigError(f"TrainableTokensConfig.token_indices lists {repeated} more than once; list each once.")
        if not isinstance(self.init_weights, bool):
            raise ConfigError(f"TrainableTokensConfig.init_weights must be True or False, got {self.init_weights!r}.")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for key in _NOT_IN_PEFT:
            if out.get(key) is None:
                out.pop(key, None)
        # The LM head tied to the embedding is adapted because of the tie, not because it is a
        # target: PEFT ties it itself on loading, and fails if the saved targets name it too.
        head = vars(self).get("_tied_head")
        targets = out.get("target_modules")
        if isinstance(head, str) and isinstance(targets, list):
            out["target_modules"] = [t for t in targets if not (head == t or head.endswith("." + t))]
        return out
