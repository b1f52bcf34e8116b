"""FourierFT: a sparse trained spectrum whose inverse 2-D Fourier transform is the weight update."""

from deltatune.methods.fourierft.adapter import FourierFTLinear, create_fourierft, supports_fourierft
from deltatune.methods.fourierft.config import FourierFTConfig
from deltatune.registry import Method, register_method

register_method(
    Method(
        peft_type=FourierFTConfig.peft_type,
        config_cls=FourierFTConfig,
        create=create_fourierft,
        supports=supports_fourierft,
        layer_types=("Linear", "GPT-2 Conv1D"),
    )
)

__all__ = ["FourierFTConfig", "FourierFTLinear"]
