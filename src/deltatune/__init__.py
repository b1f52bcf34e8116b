"""deltatune: parameter-efficient fine-tuning for PyTorch and Hugging Face models.

import deltatune as dt
model = dt.wrap(base_model, dt.LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
"""

from deltatune.config import AdapterConfig
from deltatune.errors import (
    AdapterNameError,
    CheckpointError,
    ConfigError,
    DeltatuneError,
    MergeError,
    TargetError,
    UnsupportedLayerError,
)
from deltatune.layer import BASE, AdaptedLayer, Adapter
from deltatune.methods.lora import LoraConfig
from deltatune.model import DeltaModel, wrap
from deltatune.registry import registered_methods

__version__ = "0.1.0"

__all__ = [
    "BASE",
    "AdaptedLayer",
    "Adapter",
    "AdapterConfig",
    "AdapterNameError",
    "CheckpointError",
    "ConfigError",
    "DeltaModel",
    "DeltatuneError",
    "LoraConfig",
    "MergeError",
    "TargetError",
    "UnsupportedLayerError",
    "registered_methods",
    "wrap",
]
