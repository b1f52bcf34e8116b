"""deltatune: parameter-efficient fine-tuning for PyTorch and Hugging Face models.

import deltatune as dt
model = dt.wrap(base_model, dt.LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
"""

from deltatune import optim
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
from deltatune.methods.adalora import AdaLoraConfig
from deltatune.methods.adaption_prompt import AdaptionPromptConfig
from deltatune.methods.beft import BeftConfig
from deltatune.methods.boft import BOFTConfig
from deltatune.methods.bottleneck import BottleneckConfig
from deltatune.methods.fourierft import FourierFTConfig
from deltatune.methods.hra import HRAConfig
from deltatune.methods.ia3 import IA3Config
from deltatune.methods.ln_tuning import LNTuningConfig
from deltatune.methods.loha import LoHaConfig
from deltatune.methods.lokr import LoKrConfig
from deltatune.methods.lora import LoraConfig
from deltatune.methods.oft import OFTConfig
from deltatune.methods.trainable_tokens import TrainableTokensConfig
from deltatune.methods.vera import VeraConfig
from deltatune.model import DeltaModel, wrap
from deltatune.prompt import (
    MultitaskPromptTuningConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
)
from deltatune.registry import registered_methods

__version__ = "0.1.0"

__all__ = [
    "AdaLoraConfig",
    "AdaptionPromptConfig",
    "BeftConfig",
    "BottleneckConfig",
    "LNTuningConfig",
    "TrainableTokensConfig",
    "BASE",
    "AdaptedLayer",
    "Adapter",
    "AdapterConfig",
    "AdapterNameError",
    "BOFTConfig",
    "CheckpointError",
    "ConfigError",
    "DeltaModel",
    "DeltatuneError",
    "FourierFTConfig",
    "HRAConfig",
    "IA3Config",
    "LoHaConfig",
    "LoKrConfig",
    "LoraConfig",
    "MergeError",
    "MultitaskPromptTuningConfig",
    "PrefixTuningConfig",
    "PromptEncoderConfig",
    "PromptTuningConfig",
    "OFTConfig",
    "TargetError",
    "UnsupportedLayerError",
    "VeraConfig",
    "optim",
    "registered_methods",
    "wrap",
]
