"""AdapterConfig: the dataclass every method's config extends.

Field names and JSON values follow Hugging Face PEFT's ``adapter_config.json`` so published
adapters load here and ours load there. Each field carries a one-line ``help`` in its metadata;
the same text feeds docs and ``--help``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from deltatune.errors import CheckpointError, ConfigError

CONFIG_NAME = "adapter_config.json"
TASK_TYPES = (
    "SEQ_CLS",
    "SEQ_2_SEQ_LM",
    "CAUSAL_LM",
    "TOKEN_CLS",
    "QUESTION_ANS",
    "FEATURE_EXTRACTION",
)
# Keys PEFT writes that carry no behaviour: accepted silently whatever their value.
_BOOKKEEPING_KEYS = {"peft_version", "auto_mapping", "deltatune_version", "peft_type"}


def _help(text: str, default: Any = None, factory: Any = None) -> Any:
    if factory is not None:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class AdapterConfig:
    """Settings shared by every injected adapter method."""

    # The method's name in PEFT checkpoints ("LORA", "IA3", ...). Set by each subclass.
    peft_type: ClassVar[str] = ""
    # PEFT fields for features this method does not implement: name -> the value meaning "off".
    # Loading a config that sets one to anything else is an error, since ignoring it would
    # silently change the model's outputs.
    unsupported_fields: ClassVar[dict[str, Any]] = {}

    task_type: str | None = _help("Task of the model (SEQ_CLS, CAUSAL_LM, ...); SEQ_CLS saves the head.")
    base_model_name_or_path: str | None = _help("Name or path of the base model the adapter was made for.")
    revision: str | None = _help("Revision of the base model on the Hub.")
    inference_mode: bool = _help("Freeze the adapter (True when loaded for inference).", False)
    target_modules: list[str] | str | None = _help(
        "Modules to adapt: a regex (full match on the module name), a list of names or name "
        "suffixes, 'all-linear', or None for the model type's default."
    )
    exclude_modules: list[str] | str | None = _help("Modules never to adapt (regex or list, as target_modules).")
    modules_to_save: list[str] | None = _help("Modules trained in full and saved with the adapter.")
    layers_to_transform: list[int] | int | None = _help("Only adapt layers with these indexes.")
    layers_pattern: list[str] | str | None = _help("Name of the layer list that layers_to_transform indexes.")

    def __post_init__(self) -> None:
        if self.task_type is not None and self.task_type not in TASK_TYPES:
            raise ConfigError(f"task_type={self.task_type!r} is unknown; use one of {list(TASK_TYPES)} or None.")
        if isinstance(self.target_modules, (set, tuple)):
            self.target_modules = sorted(self.target_modules)
        if isinstance(self.exclude_modules, (set, tuple)):
            self.exclude_modules = sorted(self.exclude_modules)
        if isinstance(self.modules_to_save, (set, tuple)):
            self.modules_to_save = list(self.modules_to_save)
        if isinstance(self.modules_to_save, str):
            self.modules_to_save = [self.modules_to_save]
        if self.layers_pattern is not None and self.layers_to_transform is None:
            raise ConfigError("layers_pattern is set but layers_to_transform is not; set both or neither.")
        for name in ("target_modules", "exclude_modules"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, list)):
                raise ConfigError(
                    f"{name} must be a regex string, a list of module names or None, got {type(value).__name__} "
                    f"{value!r}."
                )
            if isinstance(value, list) and not all(isinstance(t, str) and t for t in value):
                raise ConfigError(f"{name} must hold non-empty strings, got {value!r}.")

    # ----------------------------------------------------------------------------- JSON form
    def to_dict(self) -> dict[str, Any]:
        """The config as PEFT writes it in adapter_config.json.

        deltatune's version goes into the model card, not here: PEFT warns on keys it does not know.
        """
        out: dict[str, Any] = {"peft_type": self.peft_type}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            is_record = dataclasses.is_dataclass(value) and not isinstance(value, type)
            out[f.name] = dataclasses.asdict(value) if is_record else value  # type: ignore[arg-type]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterConfig:
        """Build the config of the method named by ``data["peft_type"]``.

        Unknown keys (e.g. from a newer PEFT) are ignored with a warning. A known PEFT feature
        this library lacks, switched on, is an error rather than a silently different model.
        """
        from deltatune.registry import get_method

        if not isinstance(data, dict):
            raise CheckpointError(f"An adapter config must be a JSON object, got {type(data).__name__}.")
        peft_type = data.get("peft_type")
        config_cls = get_method(peft_type).config_cls if cls is AdapterConfig else cls
        if cls is not AdapterConfig and peft_type not in (None, cls.peft_type):
            raise CheckpointError(f"This config is for peft_type={peft_type!r}, not {cls.peft_type!r}.")
        names = {f.name for f in dataclasses.fields(config_cls)}
        kwargs: dict[str, Any] = {}
        unknown: list[str] = []
        for key, value in data.items():
            if key in names:
                kwargs[key] = value
            elif key in config_cls.unsupported_fields:
                if value not in (config_cls.unsupported_fields[key], None, False, {}, []):
                    raise ConfigError(
                        f"The adapter sets {key}={value!r}, a feature deltatune does not support yet; "
                        f"it cannot be loaded without changing its outputs. Use an adapter without {key}."
                    )
            elif key not in _BOOKKEEPING_KEYS:
                unknown.append(key)
        if unknown:
            warnings.warn(
                f"Ignoring unknown {config_cls.__name__} keys {sorted(unknown)} (written by a newer version?).",
                stacklevel=2,
            )
        try:
            return config_cls(**kwargs)
        except TypeError as exc:  # a wrong value type that the dataclass could not take
            raise ConfigError(f"Invalid {config_cls.__name__}: {exc}") from exc

    # ----------------------------------------------------------------------------- files
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write adapter_config.json atomically into ``directory``."""
        from deltatune.files import atomic_write_bytes

        path = Path(directory) / CONFIG_NAME
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True, default=_json_default)
        atomic_write_bytes(path, (text + "\n").encode())
        return path

    @staticmethod
    def load(directory: str | os.PathLike[str]) -> AdapterConfig:
        """Read adapter_config.json from ``directory``; errors name the file and the fix."""
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise CheckpointError(f"No {CONFIG_NAME} in {Path(directory)}; is this an adapter folder?")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path} is not valid JSON ({exc}); re-save the adapter or fix the file.") from exc
        return AdapterConfig.from_dict(data)


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, tuple)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def pattern_value(patterns: dict[str, Any], module_name: str, default: Any) -> Any:
    """The value of the first pattern matching a dot-bounded suffix of the module name.

    PEFT's rule for ``rank_pattern`` / ``alpha_pattern`` and the like, shared by every method.
    """
    import re

    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module_name):
            return value
    return default
