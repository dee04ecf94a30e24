"""What `recipes plan` adds to LoRA's trainable count: the token rows a stage may train
(``train_tokens``, recipes.training.token_rows) and, for Qwen v1, how its LoRA names translate to the
native Qwen2 layers it trains as (q, k and v apart train more than v1's fused c_attn at the same
rank), through the model family's native form (recipes.family). No torch."""

from __future__ import annotations

CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")  # recipes.training.token_rows.CHAT_TOKENS (that module imports torch lazily)


def token_rows_estimate(settings, kind: str, shape) -> dict:
    """The rows ``train_tokens`` may train: how many parameters they add, and whether it is decided now."""
    setting = settings.train_tokens
    from recipes.plugins.registry import chat_kind

    if setting is False or (setting == "auto" and not chat_kind(kind)):
        tokens, when = [], "train_tokens = false" if setting is False else "auto: a pre-training stage"
    elif setting == "auto":
        tokens, when = list(CHAT_TOKENS), ("auto: decided when the stage loads its model: on if it does not "
                                           "know ChatML (see recipes/training/token_rows.py; the log says why)")
    else:
        tokens, when = list(setting), "listed in the recipe"
    rows = len(tokens) * shape.hidden * (1 if shape.tied else 2)
    return {"setting": setting if isinstance(setting, (str, bool)) else list(setting), "tokens": tokens,
            "parameters": rows, "decision": when}


def qwen1_translation(original_targets, native_targets, rank: int, v1_shape, native_shape) -> dict:
    """v1's names and what they became; LoRA's trainable count as v1 would wrap them, and as trained."""
    from recipes.family import family

    _, notes = family().native_targets(original_targets)
    return {"translated": notes,
            "fused_trainable": v1_shape.lora_parameters(original_targets, rank),
            "native_trainable": native_shape.lora_parameters(native_targets, rank)}


def extra_lines(stage: dict) -> list[str]:
    """The plan's text lines for the token rows and the v1 translation of one stage."""
    p = stage["parameters"]
    lines = []
    v1 = p.get("qwen1")
    if v1:
        more = v1["native_trainable"] - v1["fused_trainable"]
        if v1["translated"]:
            lines.append("   Qwen v1 trains as native Qwen2; LoRA targets translated: " + "; ".join(v1["translated"]))
        if more:
            lines.append(f"   q, k and v apart train {more:,} more LoRA parameters than v1's fused c_attn at "
                         f"r={p['lora_rank']} ({v1['native_trainable']:,} against {v1['fused_trainable']:,})")
    rows = p["token_rows"]
    if rows["tokens"]:
        lines.append(f"   token rows ({', '.join(rows['tokens'])} in the input embedding and output layer; "
                     f"{rows['decision']}): +{rows['parameters']:,}; trainable {p['trainable'] + rows['parameters']:,} "
                     f"with them, {p['trainable']:,} without")
    else:
        lines.append(f"   token rows: none ({rows['decision']})")
    return lines
