"""Trainable parameters and merge support of every method on the benchmarks' tiny Llama.

    python benchmarks/method_params.py

Llama h=512, ffn=1376, 4 layers, vocab 8000; targets q_proj, v_proj, down_proj (norms for LN
tuning, the embedding for trainable tokens). Prints a Markdown table for the README.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import deltatune as dt

TARGETS = ["q_proj", "v_proj", "down_proj"]
CONFIGS: dict[str, dt.AdapterConfig] = {
    "LoRA r=16": dt.LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS),
    "DoRA r=16": dt.LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, use_dora=True),
    "AdaLoRA init_r=12": dt.AdaLoraConfig(init_r=12, target_r=4, total_step=100, target_modules=TARGETS),
    "IA3": dt.IA3Config(target_modules=TARGETS, feedforward_modules=["down_proj"]),
    "LoHa r=8": dt.LoHaConfig(r=8, alpha=8, target_modules=TARGETS),
    "LoKr r=8": dt.LoKrConfig(r=8, alpha=8, target_modules=TARGETS),
    "OFT block 32": dt.OFTConfig(oft_block_size=32, r=0, target_modules=TARGETS),
    "BOFT block 32": dt.BOFTConfig(boft_block_size=32, target_modules=TARGETS),
    "VeRA r=256": dt.VeraConfig(r=256, target_modules=TARGETS),
    "FourierFT n=1000": dt.FourierFTConfig(n_frequency=1000, target_modules=TARGETS),
    "HRA r=8": dt.HRAConfig(r=8, target_modules=TARGETS),
    "LN tuning": dt.LNTuningConfig(target_modules=["input_layernorm", "post_attention_layernorm"]),
    "trainable tokens (16)": dt.TrainableTokensConfig(token_indices=list(range(16)), target_modules=["embed_tokens"]),
    "BEFT (bias)": dt.BeftConfig(target_modules=TARGETS),
    "bottleneck (pfeiffer)": dt.BottleneckConfig(target_modules=["down_proj"], bottleneck_size=64),
}


def main() -> None:
    cfg = LlamaConfig(
        hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8, vocab_size=8000
    )
    print("| method | trainable params | share | merge |")
    print("|---|---|---|---|")
    for name, config in CONFIGS.items():
        torch.manual_seed(0)
        model = dt.wrap(LlamaForCausalLM(cfg), config)
        trainable, total = model.get_nb_trainable_parameters()
        try:
            model.merge_adapter()
            merge = "yes"
        except dt.MergeError:
            merge = "no"
        print(f"| {name} | {trainable:,d} | {100 * trainable / total:.3f}% | {merge} |")


if __name__ == "__main__":
    main()
