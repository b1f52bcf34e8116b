"""Prompt adapters in PEFT's checkpoint layout, plus what is needed to resume training.

``adapter_model.safetensors`` holds what PEFT writes: ``prompt_embeddings`` = the virtual tokens
the model sees (for P-tuning and prefix projection, the encoder's *outputs*), multitask prompt
tuning also ``prefix_task_cols`` / ``prefix_task_rows``, and trained task heads under
``base_model.<module path>...``. PEFT cannot resume training from outputs only, so the full
encoder also goes into ``deltatune_prompt_encoder.safetensors`` in the same folder, a file PEFT
does not read. Loading with ``is_trainable=True`` restores the encoder from it; without that file
(e.g. a PEFT checkpoint) training continues on the saved outputs, with a warning.

Saving a prompt adapter first removes an encoder file an earlier save left in the folder
(:func:`remove_old_encoder`), before the new weights are written: an old encoder beside new
outputs would resume training from the wrong network, and a crash between the two writes leaves
outputs without an encoder (resumable, with the warning) rather than outputs with a stale one.
Loading also checks that the encoder produces the saved outputs, and ignores it (with a warning)
when it does not.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from deltatune.errors import CheckpointError
from deltatune.prompt.encoders import MultitaskPromptTable, PromptTable

if TYPE_CHECKING:
    from deltatune.model import DeltaModel
    from deltatune.prompt.adapter import PromptAdapter

ENCODER_NAME = "deltatune_prompt_encoder.safetensors"
_MODEL_PREFIX = "base_model.model."  # where deltatune's generic keys put trained task heads
_PROMPT_PREFIX = "base_model."  # where PEFT puts them for prompt methods


def for_saving(
    prompt: PromptAdapter, live: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """(tensors of adapter_model.safetensors, {extra file name: tensors}) for one prompt adapter."""
    tensors = {
        _PROMPT_PREFIX + k[len(_MODEL_PREFIX) :] if k.startswith(_MODEL_PREFIX) else k: v for k, v in live.items()
    }
    encoder = prompt.encoder
    with torch.no_grad():
        if isinstance(encoder, MultitaskPromptTable):
            tensors["prompt_embeddings"] = encoder.embedding.weight
            tensors["prefix_task_cols"] = encoder.prefix_task_cols
            tensors["prefix_task_rows"] = encoder.prefix_task_rows
        else:
            tensors["prompt_embeddings"] = prompt.table()
    extra: dict[str, dict[str, torch.Tensor]] = {}
    if prompt.has_network(prompt.config) and not isinstance(encoder, PromptTable):
        extra[ENCODER_NAME] = {k: v.detach().cpu().contiguous().clone() for k, v in encoder.state_dict().items()}
    return {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, extra


def remove_old_encoder(folder: str | os.PathLike[str]) -> None:
    """Delete ``folder/deltatune_prompt_encoder.safetensors`` when it is ours; leave anything else alone.

    Ours: a regular file (not a link) whose safetensors header lists only encoder tensors. The
    unlink is one atomic filesystem step, so the folder never holds a half-removed file.
    """
    path = Path(folder) / ENCODER_NAME
    try:
        if path.is_symlink() or not path.is_file():
            return
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception:  # unreadable (not safetensors, no permission): not a file we wrote
        warnings.warn(f"Left {path} in place: it is not a deltatune prompt encoder file.", stacklevel=3)
        return
    if not keys or not all(k.split(".", 1)[0] in _ENCODER_PARTS for k in keys):
        warnings.warn(f"Left {path} in place: it holds tensors that no deltatune prompt encoder has.", stacklevel=3)
        return
    path.unlink(missing_ok=True)


# Top-level parameter names of the encoders in encoders.py (what an encoder file may hold).
_ENCODER_PARTS = {"embedding", "mlp_head", "lstm_head", "transform", "prefix_task_cols", "prefix_task_rows"}


def read_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of one file: safetensors, or a pickle read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No file {path}.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a dict of tensors.")
    return state


def load_prompt(model: DeltaModel, adapter_name: str, prompt: PromptAdapter, folder: str | os.PathLike[str]) -> None:
    """Fill a prompt adapter (and its task heads) from ``folder``; all checks pass before anything is written."""
    from deltatune.checkpoint import adapter_state, read_tensors

    loaded = read_tensors(folder)
    config = prompt.config
    heads = {_PROMPT_PREFIX + k[len(_MODEL_PREFIX) :]: v for k, v in adapter_state(model, adapter_name).items()}
    encoder = prompt.encoder
    names = ["prompt_embeddings"]
    if isinstance(encoder, MultitaskPromptTable):
        names += ["prefix_task_cols", "prefix_task_rows"]
    missing = [k for k in [*names, *heads] if k not in loaded]
    unknown = [k for k in loaded if k not in names and k not in heads]
    if missing or unknown:
        raise CheckpointError(
            f"The checkpoint in {folder} does not fit prompt adapter {adapter_name!r} ({config.peft_type}): "
            f"missing {missing[:5]}, unexpected {unknown[:5]}. Was it saved for another method or task type?"
        )
    expected = (prompt.rows, prompt.out_width)
    found = tuple(loaded["prompt_embeddings"].shape)
    if found != expected:
        raise CheckpointError(
            f"prompt_embeddings in {folder} has shape {found}, but this adapter expects {expected} "
            f"(num_virtual_tokens={config.num_virtual_tokens}, rows={prompt.rows}, width={prompt.out_width} for "
            f"token_dim={config.token_dim}, num_layers={config.num_layers}): the checkpoint was made for another "
            "num_virtual_tokens or hidden size. Load it on the model it was trained for, with its own config."
        )
    for key, target in heads.items():
        if tuple(loaded[key].shape) != tuple(target.shape):
            raise CheckpointError(f"{key} has shape {tuple(loaded[key].shape)}, the model has {tuple(target.shape)}.")
    state = _encoder_state(prompt, folder, loaded["prompt_embeddings"])
    with torch.no_grad():
        for key, target in heads.items():
            target.copy_(loaded[key])
        if state is not None:
            encoder.load_state_dict(state)
        elif not prompt.has_network(config) or isinstance(encoder, PromptTable):
            cast(nn.Embedding, encoder.embedding).weight.copy_(loaded["prompt_embeddings"])
            if isinstance(encoder, MultitaskPromptTable):
                encoder.prefix_task_cols.copy_(loaded["prefix_task_cols"])
                encoder.prefix_task_rows.copy_(loaded["prefix_task_rows"])
        else:  # trainable, but only the encoder's outputs were saved: train those from now on
            warnings.warn(
                f"{folder} has no usable {ENCODER_NAME} (a PEFT checkpoint?): adapter {adapter_name!r} resumes "
                "training on the saved prompt outputs; the encoder network that produced them is not available.",
                stacklevel=4,
            )
            table = PromptTable(prompt.rows, prompt.out_width).to(loaded["prompt_embeddings"].device)
            table.embedding.weight.copy_(loaded["prompt_embeddings"])
            device = next(encoder.parameters()).device
            trainable = any(p.requires_grad for p in encoder.parameters())
            table = table.to(device).requires_grad_(trainable)
            prompt.encoder = table


def _encoder_state(
    prompt: PromptAdapter, folder: str | os.PathLike[str], outputs: torch.Tensor
) -> dict[str, torch.Tensor] | None:
    """The saved encoder, when the adapter trains it and the folder has it; checked against the adapter.

    An encoder that does not produce the saved ``outputs`` (a file from another save, copied in) is
    ignored with a warning: the outputs are what the adapter is, the encoder only a way to train them.
    """
    path = Path(folder) / ENCODER_NAME
    encoder = prompt.encoder
    if not prompt.has_network(prompt.config) or isinstance(encoder, PromptTable) or not path.is_file():
        return None
    state = read_file(path)
    own = encoder.state_dict()
    wrong = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
    wrong += sorted(set(state) - set(own))
    if wrong:
        raise CheckpointError(
            f"{path} does not fit this adapter's encoder (differs at {wrong[:5]}); "
            "was it saved with another encoder_hidden_size, encoder type or model?"
        )
    probe = copy.deepcopy(encoder).eval()
    probe.load_state_dict(state)
    with torch.no_grad():
        produced = probe.table().float().cpu()  # type: ignore[operator]
    if produced.shape != outputs.shape or not torch.allclose(produced, outputs.float().cpu(), atol=1e-5, rtol=1e-4):
        warnings.warn(
            f"Ignored {path}: its encoder does not produce the prompt_embeddings saved beside it (a file left by "
            "another save?).",
            stacklevel=4,
        )
        return None
    return state
