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

# Qwen-7B v1 trains as its native Qwen2 conversion (qwen_recipes.convert): LoRA targets written in v1
# names become the Qwen2 layers they were. `c_proj` alone is ambiguous (attention's output and the
# MLP's down projection; peft matched it in both): it maps to both.
QWEN1_TARGETS = {
    "c_attn": ("q_proj", "k_proj", "v_proj"),
    "c_proj": ("o_proj", "down_proj"),
    "attn.c_proj": ("o_proj",),
    "mlp.c_proj": ("down_proj",),
    "w1": ("up_proj",),
    "w2": ("gate_proj",),
}


def native_targets(targets) -> tuple[object, list[str]]:
    """(the targets in Qwen2 names, one note per translated name). "all" stays "all"."""
    if targets == "all":
        return targets, []
    out: list[str] = []
    notes = []
    for name in targets:
        native = QWEN1_TARGETS.get(name, (name,))
        if name in QWEN1_TARGETS:
            note = f"{name} -> {', '.join(native)}"
            if name == "c_proj":
                note += " (v1's c_proj is both attn.c_proj and mlp.c_proj; write attn.c_proj or mlp.c_proj for one)"
            notes.append(note)
        out.extend(n for n in native if n not in out)
    return tuple(out), notes
