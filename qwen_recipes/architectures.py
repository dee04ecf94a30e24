"""What the project knows about Qwen architectures: linear module names and LoRA targets."""

from __future__ import annotations

# model_type (config.json) -> the linear layers of one decoder block, by short name
LINEAR_MODULES = {
    # Qwen2 / Qwen2.5 (native in transformers)
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    # Qwen-7B v1 (QWenLMHeadModel, trust_remote_code)
    "qwen": ("c_attn", "c_proj", "w1", "w2"),
}

# The chat turn terminator Qwen's ChatML puts after every message, and the pre-training separator.
TURN_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
