"""Per-method test cases: every registered method must appear here, or the suite fails.

A case builds a config for given targets, either as a no-op at init (``identity=True``, the
method's "starts as the base model" setting) or with random non-trivial weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import deltatune as dt


@dataclass(frozen=True)
class MethodCase:
    peft_type: str
    kinds: tuple[str, ...]  # layer kinds (see models.ModelCase.kind) the method supports
    config: Callable[..., dt.AdapterConfig]  # (targets, identity: bool, variant: int) -> config
    mergeable: bool = True
    mixed_batches: bool = False
    # For methods whose config has no random init (LN tuning starts as a copy of the norm): makes
    # the adapter non-trivial after dt.wrap when the matrix asks for identity=False.
    randomize: Callable[[dt.DeltaModel], None] | None = None


def lora(targets: list[str] | str, identity: bool, variant: int = 0) -> dt.AdapterConfig:
    return dt.LoraConfig(
        target_modules=targets,
        r=(4, 2, 3)[variant % 3],
        lora_alpha=(8, 3, 5)[variant % 3],
        use_rslora=variant == 1,
        init_lora_weights=identity,
    )


def lora_dora(targets: list[str] | str, identity: bool, variant: int = 0) -> dt.AdapterConfig:
    config = lora(targets, identity, variant)
    assert isinstance(config, dt.LoraConfig)
    config.use_dora = True  # DoRA's dropout path is tested in tests/test_lora_variants.py
    return config


_LORA_KINDS = ("linear", "embedding", "conv1d", "conv2d", "conv3d", "gpt2_conv1d", "transformer")


def ia3(targets: list[str] | str, identity: bool, variant: int = 0) -> dt.AdapterConfig:
    # feedforward_modules must be a subset of the targets: the first target, none, or all of them.
    if isinstance(targets, str):  # "all-linear" on the tiny Llama
        ff: list[str] = [["down_proj"], [], ["gate_proj", "up_proj", "down_proj"]][variant % 3]
    else:
        ff = [targets[:1], [], list(targets)][variant % 3]
    return dt.IA3Config(target_modules=targets, feedforward_modules=ff, init_ia3_weights=identity)


def loha(targets: list[str] | str, identity: bool, variant: int = 0) -> dt.AdapterConfig:
    return dt.LoHaConfig(
        target_modules=targets,
        r=(4, 2, 3)[variant % 3],
        alpha=(8, 3, 5)[variant % 3],
        use_effective_conv2d=variant % 3 == 1,
        init_weights=identity,
    )


def lokr(targets: list[str] | str, identity: bool, variant: int = 0) -> dt.AdapterConfig:
    # The variants reach the full and the factored forms of both Kronecker factors.
    return dt.LoKrConfig(
        target_modules=targets,
        r=(4, 1, 2)[variant % 3],
        alpha=(8, 3, 5)[variant % 3],
        use_effective_conv2d=variant % 3 == 1,
        decompose_both=variant % 3 == 1,
        decompose_factor=(-1, -1, 2)[variant % 3],
        init_weights=("lycoris" if variant % 3 == 2 else True) if identity else False,
    )


def vera(targets: list[str] | str, identity: bool, variant: int = 0) -> dt.AdapterConfig:
    return dt.VeraConfig(
        target_modules=targets,
        r=(4, 2, 6)[variant % 3],
        projection_prng_key=(0, 3, 7)[variant % 3],
        save_projection=variant % 3 != 1,
        d_initial=(0.1, 0.5, 0.05)[variant % 3],
        init_weights=identity,
    )


def fourierft(targets: list[str] | str, identity: bool, variant: int = 0) -> dt.AdapterConfig:
    # n_frequency stays below in * out of the smallest target (the MLP's 20 x 6 layer).
    return dt.FourierFTConfig(
        target_modules=targets,
        n_frequency=(32, 16, 50)[variant % 3],
        scaling=(10.0, 25.0, 5.0)[variant % 3],
        random_loc_seed=(777, 1, 42)[variant % 3],
        init_weights=identity,
    )


def hra(targets: list[str] | str, identity: bool, variant: int = 0) -> dt.AdapterConfig:
    # The identity start needs an even r and no Gram-Schmidt.
    return dt.HRAConfig(
        target_modules=targets,
        r=(4, 2, 6)[variant % 3],
        apply_GS=variant % 3 == 1 and not identity,
        init_weights=identity,
    )


def _oft_layout(targets: list[str] | str) -> dict:
    # Block sizes must divide every targeted layer's features (see tests/models.py).
    if targets == "all-linear":
        return dict(r=0, oft_block_size=8)  # 32 and 48 features
    if "emb" in targets:
        return dict(r=0, oft_block_size=4)  # 12 and 12
    if "conv0" in targets:
        # in x kernel: 9/16, 27/32, 81/64 features, so one block per layer; the Neumann series is
        # only accurate for small generators, not for a random 81 x 81 block: use the exact transform.
        return dict(r=1, oft_block_size=0, use_cayley_neumann=False)
    return dict(r=2, oft_block_size=0)  # 10/20 (MLP), 10/24 (GPT-2 Conv1D)


def oft(targets: list[str] | str, identity: bool, variant: int = 0) -> dt.AdapterConfig:
    return dt.OFTConfig(
        target_modules=targets,
        **{"use_cayley_neumann": variant % 3 != 1, **_oft_layout(targets)},
        block_share=variant % 3 == 1,
        coft=variant % 3 == 2,
        eps=0.5,
        init_weights=identity,
    )


def _boft_layout(targets: list[str] | str, variant: int) -> dict:
    if targets == "all-linear":  # 32 and 48 features
        return [
            dict(boft_block_size=4, boft_n_butterfly_factor=3),
            dict(boft_block_size=0, boft_block_num=4, boft_n_butterfly_factor=2),
            dict(boft_block_size=8),
        ][variant % 3]
    if "conv0" in targets:
        return dict(boft_block_size=0, boft_block_num=1)
    return [dict(boft_block_size=2), dict(boft_block_size=0, boft_block_num=2)][variant % 2]


def boft(targets: list[str] | str, identity: bool, variant: int = 0) -> dt.AdapterConfig:
    return dt.BOFTConfig(target_modules=targets, **_boft_layout(targets, variant), init_weights=identity)


def randomize_adapters(model: dt.DeltaModel) -> None:
    """Random values (seeded) in every parameter of the model's adapters."""
    import torch

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.adapter_parameters("default"):
            param.copy_(torch.randn(param.shape, generator=g) * 0.5 + 1.0)


def ln_tuning(targets: list[str] | str, identity: bool, variant: int = 0) -> dt.AdapterConfig:
    return dt.LNTuningConfig(target_modules=targets)


def trainable_tokens(targets: list[str] | str, identity: bool, variant: int = 0) -> dt.AdapterConfig:
    # Indices below 4: the smallest target is the embedding model's Linear(12, 4).
    indices = ([1, 3], [0, 2], [3])[variant % 3]
    return dt.TrainableTokensConfig(target_modules=targets, token_indices=indices, init_weights=identity)


def beft(targets: list[str] | str, identity: bool, variant: int = 0) -> dt.AdapterConfig:
    return dt.BeftConfig(target_modules=targets, init_weights=identity)


def bottleneck(targets: list[str] | str, identity: bool, variant: int = 0) -> dt.AdapterConfig:
    return dt.BottleneckConfig(
        target_modules=targets,
        bottleneck_size=(None, 3, 5)[variant % 3],
        reduction_factor=(4, None, None)[variant % 3],
        non_linearity=("relu", "gelu", "tanh")[variant % 3],
        placement="parallel" if variant % 3 == 1 and "emb" not in targets else "sequential",
        scaling=(1.0, 0.5, 2.0)[variant % 3],
        init_weights=identity,
    )


def adalora(targets: list[str] | str, identity: bool, variant: int = 0) -> dt.AdapterConfig:
    # identity: Λ = 0 (PEFT's init); random: P, Λ, Q ~ N(0, 1), with a small alpha to keep outputs moderate.
    # Variant 2 starts one layer already pruned (rank_pattern), as an adapter loaded after allocation.
    init_r = (4, 2, 3)[variant % 3]
    pruned = variant % 3 == 2 and isinstance(targets, list)
    return dt.AdaLoraConfig(
        target_modules=targets,
        init_r=init_r,
        target_r=1,
        total_step=10,
        tinit=(0, 2, 1)[variant % 3],
        tfinal=(0, 3, 2)[variant % 3],
        lora_alpha=(0.5, 0.2, 0.3)[variant % 3],
        rank_pattern={f"{targets[0]}.lora_E": [True, False, True]} if pruned else None,
        init_lora_weights=identity,
    )


def adaption_prompt(targets: list[str] | str, identity: bool, variant: int = 0) -> dt.AdapterConfig:
    # The tiny Llama and GPT-2 have 2 decoder layers; variant 1 adapts only the top one.
    return dt.AdaptionPromptConfig(
        target_modules=targets, adapter_len=(4, 2, 3)[variant % 3], adapter_layers=(2, 1, 2)[variant % 3]
    )


def lora_parameters(targets: list[str] | str, identity: bool, variant: int = 0) -> dt.AdapterConfig:
    # The "parameters" model case lists parameter names: LoRA on raw parameters, no module targets.
    assert isinstance(targets, list)
    return dt.LoraConfig(
        target_modules=[],
        target_parameters=targets,
        r=(4, 2, 3)[variant % 3],
        lora_alpha=(8, 3, 5)[variant % 3],
        use_rslora=variant == 1,
        init_lora_weights=identity,
    )


METHOD_CASES = {
    "LORA": MethodCase("LORA", (*_LORA_KINDS,), lora, mixed_batches=True),
    "LORA-DORA": MethodCase("LORA", (*_LORA_KINDS,), lora_dora, mixed_batches=True),
    "IA3": MethodCase("IA3", ("linear", "conv1d", "conv2d", "conv3d", "gpt2_conv1d", "transformer"), ia3),
    "LOHA": MethodCase("LOHA", ("linear", "conv1d", "conv2d", "transformer"), loha),
    "LOKR": MethodCase("LOKR", ("linear", "conv1d", "conv2d", "transformer"), lokr),
    "VERA": MethodCase("VERA", ("linear", "gpt2_conv1d", "transformer"), vera),
    "FOURIERFT": MethodCase("FOURIERFT", ("linear", "gpt2_conv1d", "transformer"), fourierft),
    "HRA": MethodCase("HRA", ("linear", "conv2d", "transformer"), hra),
    "OFT": MethodCase("OFT", ("linear", "embedding", "conv1d", "conv2d", "conv3d", "gpt2_conv1d", "transformer"), oft),
    "BOFT": MethodCase("BOFT", ("linear", "conv1d", "conv2d", "conv3d", "gpt2_conv1d", "transformer"), boft),
    "LN_TUNING": MethodCase("LN_TUNING", ("norm", "transformer_norm"), ln_tuning, randomize=randomize_adapters),
    "TRAINABLE_TOKENS": MethodCase("TRAINABLE_TOKENS", ("embedding", "linear", "tied_embedding"), trainable_tokens),
    "BEFT": MethodCase("BEFT", ("linear", "conv1d", "conv2d", "conv3d", "gpt2_conv1d"), beft),
    "DELTATUNE_BOTTLENECK": MethodCase(
        "DELTATUNE_BOTTLENECK",
        ("linear", "embedding", "gpt2_conv1d", "transformer", "norm"),
        bottleneck,
        mergeable=False,
    ),
    "ADALORA": MethodCase("ADALORA", ("linear", "conv2d", "gpt2_conv1d", "transformer"), adalora),
    # LoRA on nn.MultiheadAttention: no DoRA, no mixed batches there (as in PEFT).
    "LORA-MHA": MethodCase("LORA", ("mha",), lora),
    "LORA-PARAMS": MethodCase("LORA", ("parameters",), lora_parameters),
    # Adapts whole attention modules, so only the "llama_attention" / "gpt2_attention" kinds; identity = the
    # zero gate, random = randomize_adapters (gate near 1). Merging is impossible (attention over prompt tokens).
    "ADAPTION_PROMPT": MethodCase(
        "ADAPTION_PROMPT",
        ("llama_attention", "gpt2_attention"),
        adaption_prompt,
        mergeable=False,
        randomize=randomize_adapters,
    ),
}
