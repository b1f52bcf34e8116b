"""Adapter checkpoints in PEFT's layout.

A folder holds ``adapter_config.json``, ``adapter_model.safetensors`` (metadata
``{"format": "pt"}``) and a ``README.md`` model card. Tensor keys are
``base_model.model.<module path>.<PEFT parameter name>`` without the adapter name, e.g.
``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``; modules trained in full
appear under their plain keys. The key map is built from the model's own adapters, and the same
map serves saving and loading, so the two cannot drift apart.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from deltatune.config import CONFIG_NAME, AdapterConfig
from deltatune.errors import CheckpointError
from deltatune.files import atomic_write, atomic_write_bytes
from deltatune.registry import method_for_config

if TYPE_CHECKING:
    from deltatune.model import DeltaModel

WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAME = "adapter_model.bin"
PREFIX = "base_model.model."
SHARED_PREFIX = "base_model."  # tensors shared by all layers of an adapter, e.g. "base_model.vera_A"
_CARD_MARK = "<!-- written by deltatune -->"


def adapter_state(model: DeltaModel, adapter_name: str) -> dict[str, torch.Tensor]:
    """PEFT checkpoint key -> the live tensor, for one adapter."""
    state: dict[str, torch.Tensor] = {}
    for path, adapter in model.adapter_modules(adapter_name):
        for key, tensor in adapter.state_dict(keep_vars=True).items():
            state[f"{PREFIX}{path}.{key}"] = tensor
    for path, wrapper in model.saved_modules():
        trained = wrapper.modules_to_save._modules.get(adapter_name)
        if trained is not None:
            for key, tensor in trained.state_dict(keep_vars=True).items():
                state[f"{PREFIX}{path}.{key}"] = tensor
    biases = {id(p) for p in model._bias_parameters(adapter_name)}
    if biases:
        for key, param in model.model.named_parameters(remove_duplicate=False):
            if id(param) in biases:
                state[f"{PREFIX}{key}"] = param
    shared = model.shared_by_adapter._modules.get(adapter_name)
    if shared is not None:  # its non-persistent buffers are left out (e.g. VeRA's save_projection=False)
        for key, tensor in shared.state_dict(keep_vars=True).items():
            state[f"{SHARED_PREFIX}{key}"] = tensor
    return state


def _rebuilt_shared(model: DeltaModel, adapter_name: str) -> dict[str, torch.Tensor]:
    """Shared buffers, saved or not: create_shared rebuilt them from the config, so a checkpoint may omit them."""
    shared = model.shared_by_adapter._modules.get(adapter_name)
    if shared is None:
        return {}
    return {f"{SHARED_PREFIX}{key}": buffer for key, buffer in shared.named_buffers()}


# --------------------------------------------------------------------------------- saving
def save_adapter(
    model: DeltaModel,
    adapter_name: str,
    folder: str | os.PathLike[str],
    initial_folder: str | os.PathLike[str] | None = None,
) -> None:
    """Write one adapter to ``folder``. Each file is written atomically (temp file + rename).

    With ``initial_folder`` (the adapter saved right after a PiSSA/OLoRA init) it is written as
    the plain LoRA that gives the same model on the original base weights.
    """
    from safetensors.torch import save_file

    target = Path(folder)
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"Cannot save the adapter to {target}: a file with that name exists.")
    live = adapter_state(model, adapter_name)
    if any(t.device.type == "meta" for t in live.values()):
        raise CheckpointError("The adapter is on the meta device; materialise the model before saving.")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in live.items()}
    prompt = model.prompt_by_adapter._modules.get(adapter_name)
    extra_files: dict[str, dict[str, torch.Tensor]] = {}
    if prompt is not None:  # prompt methods: PEFT's keys, plus (in another file) the encoder to resume training
        from deltatune.prompt.files import for_saving

        tensors, extra_files = for_saving(prompt, live)  # type: ignore[arg-type]
    config = _config_for_saving(model.peft_config[adapter_name])
    to_checkpoint = method_for_config(config).checkpoint_tensors
    if to_checkpoint is not None:  # e.g. AdaLoRA keeps only the ranks its allocator kept
        tensors = to_checkpoint(model, adapter_name, tensors)
    if initial_folder is not None:
        from deltatune.methods.lora.init import convert_to_plain_lora

        tensors, config = convert_to_plain_lora(model, adapter_name, tensors, config, initial_folder)
    if prompt is not None:  # an encoder file of an earlier save must not outlive these weights
        from deltatune.prompt.files import remove_old_encoder

        remove_old_encoder(target)
    atomic_write(target / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    for file_name, file_tensors in extra_files.items():
        atomic_write(target / file_name, functools.partial(_save_tensors, file_tensors))
    config.save(target)
    card = target / "README.md"
    if not card.exists() or _CARD_MARK in card.read_text(encoding="utf-8", errors="replace"):
        atomic_write_bytes(card, _model_card(adapter_name, config, tensors).encode())


def _save_tensors(tensors: dict[str, torch.Tensor], path: str) -> None:
    from safetensors.torch import save_file

    save_file(tensors, path, metadata={"format": "pt"})


def _config_for_saving(config: AdapterConfig) -> AdapterConfig:
    import copy

    saved = copy.deepcopy(config)
    saved.inference_mode = True
    return saved


def _model_card(adapter_name: str, config: AdapterConfig, tensors: dict[str, torch.Tensor]) -> str:
    from deltatune import __version__

    base = config.base_model_name_or_path
    count = sum(t.numel() for t in tensors.values())
    lines = [
        "---",
        "library_name: peft",
        *([f"base_model: {base}"] if base else []),
        "tags:",
        "- deltatune",
        f"- {config.peft_type.lower()}",
        "---",
        _CARD_MARK,
        f"# Adapter `{adapter_name}`",
        "",
        f"- method: {config.peft_type}",
        f"- base model: {base or 'unknown'}",
        f"- target modules: {config.target_modules}",
        f"- parameters: {count:,d}",
        f"- written by deltatune {__version__} (PEFT checkpoint format)",
        "",
        "```python",
        "import deltatune as dt",
        'model = dt.DeltaModel.from_pretrained(base_model, "path/to/this/folder")',
        "```",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------- loading
def resolve_adapter(
    model_id: str | os.PathLike[str], config: AdapterConfig | None, subfolder: str | None, hub_kwargs: dict[str, Any]
) -> tuple[str, AdapterConfig]:
    """The local folder of an adapter (downloading a Hub id if needed) and its config.

    ``hub_kwargs``: PEFT's loading options and huggingface_hub download options (``revision``,
    ``token``, ``cache_dir``, ...); see :func:`check_load_options`.
    """
    hub_kwargs = check_load_options(hub_kwargs)
    folder = Path(model_id)
    if subfolder:
        folder = folder / subfolder
    if not folder.exists():
        folder = Path(_download(str(model_id), subfolder, hub_kwargs))
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder; pass the folder that holds {CONFIG_NAME}.")
    return str(folder), config if config is not None else AdapterConfig.load(folder)


# PEFT's own load_adapter / from_pretrained options, with the values deltatune gives anyway (it
# always builds adapters in place on the base's device, fp32 on a low-precision base): those are
# accepted; any other value is refused rather than ignored.
_PEFT_OPTIONS: dict[str, tuple[tuple[Any, ...], str]] = {
    "low_cpu_mem_usage": ((True, False), ""),
    "autocast_adapter_dtype": ((True,), "adapters stay float32 on a low-precision base (PEFT's default, True)"),
    "torch_device": ((None,), "adapters are created on their base layer's device; move the model with .to(device)"),
    "ephemeral_gpu_offload": ((False,), "there is no GPU offload for DoRA; leave it False"),
    "key_mapping": ((None,), "keys are mapped from the model's own adapters; rename the checkpoint's keys first"),
}


def check_load_options(options: dict[str, Any]) -> dict[str, Any]:
    """Split PEFT's loading options from the download options; refuse what would be ignored."""
    hub: dict[str, Any] = {}
    for key, value in options.items():
        if key not in _PEFT_OPTIONS:
            hub[key] = value
            continue
        allowed, why = _PEFT_OPTIONS[key]
        if not any(value is a for a in allowed):  # True, False, None: singletons
            raise CheckpointError(f"{key}={value!r} is not supported: {why}.")
    if hub:
        import inspect

        from huggingface_hub import snapshot_download

        known = set(inspect.signature(snapshot_download).parameters) - {"repo_id", "allow_patterns"}
        unknown = sorted(set(hub) - known)
        if unknown:
            raise CheckpointError(
                f"Unknown loading option(s) {unknown}. Loading takes is_trainable, config, subfolder, "
                f"low_cpu_mem_usage and Hub download options ({', '.join(sorted(known))})."
            )
    return hub


def _download(repo_id: str, subfolder: str | None, hub_kwargs: dict[str, Any]) -> str:
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/")):
        raise CheckpointError(f"No adapter folder at {repo_id!r} (and it is not a Hub id like 'org/name').")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub comes with transformers
        raise CheckpointError(
            f"{repo_id!r} is not a local folder; install huggingface_hub to load from the Hub."
        ) from exc
    pattern = f"{subfolder}/*" if subfolder else "*"
    try:
        root = snapshot_download(repo_id, allow_patterns=[pattern], **hub_kwargs)
    except Exception as exc:
        raise CheckpointError(f"Could not fetch adapter {repo_id!r} from the Hub: {exc}") from exc
    return os.path.join(root, subfolder) if subfolder else root


def read_tensors(folder: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of an adapter folder: safetensors, or a pickle loaded with weights_only=True."""
    folder = Path(folder)
    path = folder / WEIGHTS_NAME
    if path.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"{path} is corrupted or truncated ({exc}); re-download or re-save the adapter."
            ) from exc
    path = folder / PICKLE_WEIGHTS_NAME
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{path} could not be loaded safely ({exc}); convert it to safetensors.") from exc
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path} does not hold a flat dict of tensors.")
        return state
    raise CheckpointError(f"No {WEIGHTS_NAME} (or {PICKLE_WEIGHTS_NAME}) in {folder}.")


def load_weights(model: DeltaModel, adapter_name: str, folder: str | os.PathLike[str]) -> None:
    """Fill adapter ``adapter_name`` from ``folder``; every check passes before anything is written."""
    prompt = model.prompt_by_adapter._modules.get(adapter_name)
    if prompt is not None:
        from deltatune.prompt.files import load_prompt

        return load_prompt(model, adapter_name, prompt, folder)  # type: ignore[arg-type]
    loaded = read_tensors(folder)
    optional = _rebuilt_shared(model, adapter_name)
    expected = {**optional, **adapter_state(model, adapter_name)}
    for key in _peft_duplicates(model, adapter_name):
        loaded.pop(key, None)
    # Base-model tensors by their key without ".base_layer.": PEFT names a base tensor after its
    # own wrapping (e.g. "q_proj.base_layer.bias" for a layer that another adapter adapts),
    # which need not be the wrapping this model has now. Tied tensors answer to every name
    # (PEFT's save_embedding_layers writes both "embed_tokens.weight" and "lm_head.weight").
    base = {_plain_key(f"{PREFIX}{k}"): p for k, p in model.model.named_parameters(remove_duplicate=False)}
    missing = [k for k in expected if k not in loaded and k not in optional]
    extra = [k for k in loaded if k not in expected]
    if missing:
        filled = len(expected) - len(missing)
        raise CheckpointError(
            f"The checkpoint in {folder} fills only {filled} of {len(expected)} tensors of adapter "
            f"{adapter_name!r}; missing e.g. {missing[:5]}. Was it saved for another model or config?"
        )
    unknown = [k for k in extra if _plain_key(k) not in base]
    if unknown:
        raise CheckpointError(
            f"The checkpoint in {folder} has {len(unknown)} tensors that match nothing in the model, e.g. "
            f"{unknown[:5]}. Was it saved for another model or with another config?"
        )
    targets: dict[str, torch.Tensor] = {**expected, **{k: base[_plain_key(k)] for k in extra}}
    for key, tensor in loaded.items():
        if tuple(tensor.shape) != tuple(targets[key].shape):
            raise CheckpointError(
                f"Checkpoint tensor {key} has shape {tuple(tensor.shape)} but the model expects "
                f"{tuple(targets[key].shape)}; the adapter was made for a different model or rank."
            )
    if extra:
        warnings.warn(f"The checkpoint also sets {len(extra)} base-model tensors (e.g. {extra[:3]}).", stacklevel=3)
    if any(targets[k].device.type == "meta" for k in loaded):
        raise CheckpointError("The model is on the meta device; materialise it (e.g. to_empty) before loading.")
    with torch.no_grad():
        for key, tensor in loaded.items():
            targets[key].copy_(tensor)


def _plain_key(key: str) -> str:
    return key.replace(".base_layer.", ".")


def _peft_duplicates(model: DeltaModel, adapter_name: str) -> set[str]:
    """Keys PEFT writes twice for a module trained in full, to be skipped when loading.

    With bias="all", PEFT saves every ``*.bias`` of its state dict, so a trained copy's bias also
    appears as ``<module>.modules_to_save.bias``, beside ``<module>.bias`` (the same tensor).
    """
    keys: set[str] = set()
    for path, wrapper in model.saved_modules():
        trained = wrapper.modules_to_save._modules.get(adapter_name)
        if trained is not None:
            keys.update(f"{PREFIX}{path}.modules_to_save.{key}" for key in trained.state_dict())
    return keys
