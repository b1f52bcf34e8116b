"""Trainable tokens: new values for chosen rows of an embedding (and of the LM head tied to it).

The rows are stored whole (not as a difference), so they stay defined when the embedding is
resized and re-initialised between training and loading. Parameter name: PEFT's
``trainable_tokens_delta`` (shape ``(len(token_indices), dim)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deltatune import weights
from deltatune.errors import UnsupportedLayerError
from deltatune.integrations import transformers as hf
from deltatune.layer import Adapter
from deltatune.methods.trainable_tokens.config import TrainableTokensConfig

LAYER_TYPES = ("Embedding", "Linear (its output rows, e.g. the LM head)")


class TokenRows(Adapter):
    """What both layer kinds share: the token indices, the trained rows, merging by rows.

    Merging writes the rows into the base weight, keeping the rows it overwrote; unmerging puts
    those back. An LM head that holds the very tensor of the embedding it is tied to shares the
    embedding adapter's rows and leaves the writing to it (``writes_weight=False``).
    """

    merges_module = True
    needs_base = True

    def __init__(self, token_indices: list[int], rows: nn.Parameter, writes_weight: bool = True) -> None:
        super().__init__()
        self.token_indices = tuple(token_indices)
        self.trainable_tokens_delta = rows
        self.writes_weight = writes_weight
        self._index: dict[torch.device, torch.Tensor] = {}  # built per device, never saved
        self._overwritten: torch.Tensor | None = None

    def index(self, device: torch.device) -> torch.Tensor:
        if device not in self._index:
            self._index[device] = torch.tensor(self.token_indices, dtype=torch.long, device=device)
        return self._index[device]

    def merge_module(self, base: nn.Module, safe: bool = False) -> None:
        if not self.writes_weight:
            return
        weight = weights.base_weight(base)
        rows = self.trainable_tokens_delta.detach().to(weight.dtype)
        if safe:
            weights.check_finite(base, rows, what="the trained token rows")
        index = self.index(weight.device)
        self._overwritten = weight.detach().index_select(0, index).clone()
        with torch.no_grad():
            weight.index_copy_(0, index, rows)

    def unmerge_module(self, base: nn.Module) -> None:
        if not self.writes_weight or self._overwritten is None:
            return
        weight = weights.base_weight(base)
        with torch.no_grad():
            weight.index_copy_(0, self.index(weight.device), self._overwritten)
        self._overwritten = None

    def extra_repr(self) -> str:
        shown = list(self.token_indices[:8])
        more = ", ..." if len(self.token_indices) > 8 else ""
        return f"token_indices={shown}{more}" + ("" if self.writes_weight else ", tied")


class TokenEmbedding(TokenRows):
    """Embedding with trained rows (PEFT's TRAINABLE_TOKENS).

    Update rule: ``e(t) = R[k]`` if ``t = token_indices[k]``, else ``E[t]`` (times the base's
    ``embed_scale`` if it has one, e.g. Gemma). Shapes: ``E: (num_embeddings, dim)``,
    ``R: (len(token_indices), dim)``, initialised to ``E[token_indices]``. Only rows of tokens in
    the batch are gathered; the table is never copied.
    """

    def __init__(self, token_indices: list[int], rows: nn.Parameter, num_embeddings: int) -> None:
        super().__init__(token_indices, rows)
        self.num_embeddings = num_embeddings
        self._position: dict[torch.device, torch.Tensor] = {}

    def position(self, device: torch.device) -> torch.Tensor:
        """token id -> its row in ``R``, or -1 for tokens that are not trained."""
        if device not in self._position:
            table = torch.full((self.num_embeddings,), -1, dtype=torch.long, device=device)
            table[self.index(device)] = torch.arange(len(self.token_indices), device=device)
            self._position[device] = table
        return self._position[device]

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor], base: nn.Module
    ) -> torch.Tensor:
        out = inner(x)
        position = self.position(x.device)[x]
        rows = F.embedding(position.clamp(min=0), self.trainable_tokens_delta)
        scale: Any = getattr(base, "embed_scale", None)
        if scale is not None:
            rows = rows * scale
        return torch.where((position >= 0).unsqueeze(-1), rows.to(out.dtype), out)


class TokenHead(TokenRows):
    """Linear layer (an LM head) whose output rows of the chosen tokens use trained weights.

    Update rule: ``logits[..., t_k] = x R[k]^T + b[t_k]``, the other outputs as the base. Shapes:
    ``W: (vocab, dim)``, ``R: (len(token_indices), dim)``. For a head tied to the input embedding,
    ``R`` is the embedding adapter's parameter itself, so both keys in a checkpoint hold it.
    """

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, inner: Callable[[torch.Tensor], torch.Tensor], base: nn.Module
    ) -> torch.Tensor:
        out = inner(x)
        rows = self.trainable_tokens_delta
        index = self.index(x.device)
        bias = getattr(base, "bias", None)
        picked = F.linear(x.to(rows.dtype), rows, None if bias is None else bias[index].to(rows.dtype))
        return out.index_copy(out.dim() - 1, index, picked.to(out.dtype))


class TiedTokenRows(nn.Module):
    """The rows an input embedding and its tied LM head share within one adapter.

    Made once per adapter (registry ``create_shared``) and handed to both layers' factories. It
    registers nothing, so nothing of it is saved: the rows are saved under each layer's key.
    """

    def __init__(self, embedding: str, head: str, rows: nn.Parameter, same_tensor: bool) -> None:
        super().__init__()
        self.embedding = embedding
        self.head = head
        self.same_tensor = same_tensor
        self._rows = [rows]  # a list, so the module does not register (and save) it

    @property
    def rows(self) -> nn.Parameter:
        return self._rows[0]

    def extra_repr(self) -> str:
        return f"embedding={self.embedding}, head={self.head}"


def _initial_rows(base: nn.Module, name: str, config: TrainableTokensConfig) -> nn.Parameter:
    weight = weights.base_weight(base)
    too_big = [i for i in config.token_indices if i >= weight.shape[0]]
    if too_big:
        raise UnsupportedLayerError(
            f"token_indices {too_big[:5]} are out of range for {name}, which has {weight.shape[0]} rows; "
            "resize the embedding first (model.resize_token_embeddings) or fix token_indices."
        )
    dtype = weights.adapter_dtype(base)
    with torch.device(weights.module_device(base)):
        if config.init_weights:
            index = torch.tensor(config.token_indices, dtype=torch.long, device=weight.device)
            rows = weight.detach().index_select(0, index).to(dtype).clone()
        else:
            rows = torch.randn(len(config.token_indices), weight.shape[1], dtype=dtype)
    return nn.Parameter(rows)


def create_tied_rows(
    model: nn.Module, config: TrainableTokensConfig, bases: dict[str, nn.Module]
) -> TiedTokenRows | None:
    """The shared rows when both the input embedding and the LM head tied to it are targets."""
    embedding, head = hf.input_embedding_name(model), hf.tied_output_head(model)
    if embedding not in bases or head not in bases:
        return None
    emb, lin = bases[embedding], bases[head]  # type: ignore[index]
    if not isinstance(emb, nn.Embedding) or not isinstance(lin, nn.Linear) or emb.weight.shape != lin.weight.shape:
        return None
    rows = _initial_rows(emb, embedding, config)  # type: ignore[arg-type]
    vars(config)["_tied_head"] = head  # left out of the saved target_modules (see the config's to_dict)
    return TiedTokenRows(embedding, head, rows, same_tensor=lin.weight is emb.weight)  # type: ignore[arg-type]


def supports_trainable_tokens(module: nn.Module) -> bool:
    return isinstance(module, (nn.Embedding, nn.Linear))


def create_trainable_tokens(
    base: nn.Module, name: str, config: TrainableTokensConfig, shared: TiedTokenRows | None = None
) -> TokenRows:
    """The trainable-tokens adapter for ``base`` (the module ``name`` of the model)."""
    if isinstance(base, nn.Embedding):
        if base.max_norm is not None:
            raise UnsupportedLayerError(
                f"Trainable tokens cannot adapt {name}: its max_norm renormalises rows in place. "
                "Use an embedding without max_norm."
            )
        rows = shared.rows if shared is not None and shared.embedding == name else _initial_rows(base, name, config)
        return TokenEmbedding(config.token_indices, rows, base.num_embeddings)
    if isinstance(base, nn.Linear):
        if shared is not None and shared.head == name:
            return TokenHead(config.token_indices, shared.rows, writes_weight=not shared.same_tensor)
        return TokenHead(config.token_indices, _initial_rows(base, name, config))
    raise UnsupportedLayerError(
        f"Trainable tokens cannot adapt {name} ({type(base).__name__}); it trains rows of "
        f"{' and '.join(LAYER_TYPES)}. Target the embedding (or leave target_modules=None)."
    )
