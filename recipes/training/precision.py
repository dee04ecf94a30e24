"""The stage's compute precision: what the recipe's ``precision`` asks, resolved on this machine."""

from __future__ import annotations

import torch

from recipes.config.schema import TORCH_DTYPE_NAMES


def torch_dtype(name: str) -> torch.dtype:
    """``bf16`` / ``fp16`` / ``fp32`` as a torch dtype."""
    return getattr(torch, TORCH_DTYPE_NAMES[name])


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_precision(requested: str) -> tuple[str, str]:
    """(precision, why). auto: bf16 where the GPU supports it, else fp16 on GPU, else fp32 on CPU."""
    if requested != "auto":
        if requested in ("bf16", "fp16") and not torch.cuda.is_available():
            return requested, f"{requested} as the recipe asks (warning: no GPU; on CPU this is very slow)"
        return requested, f"{requested} as the recipe asks"
    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return "bf16", f"auto: bf16 (supported by {torch.cuda.get_device_name(0)})"
        return "fp16", f"auto: fp16 ({torch.cuda.get_device_name(0)} has no bf16)"
    return "fp32", "auto: fp32 (no GPU; bf16 on CPU is unusably slow)"


def pick_attention(requested: str, device: str, flash_installed: bool | None = None) -> tuple[str, str]:
    """(attn_implementation for from_pretrained, why). auto: flash_attention_2 where the flash-attn
    package is installed and the stage runs on a GPU, else sdpa. Packed rows work on all three: the
    collator flattens each micro-batch into one row with restarting positions (recipes.data.collate)."""
    if flash_installed is None:
        import importlib.util

        flash_installed = importlib.util.find_spec("flash_attn") is not None
    if requested != "auto":
        if requested == "flash_attention_2" and device != "cuda":
            from recipes.errors import RecipeError

            raise RecipeError('attn_implementation = "flash_attention_2" needs a GPU; use "auto" or "sdpa" here')
        return requested, f"{requested} as the recipe asks"
    if device == "cuda" and flash_installed:
        return "flash_attention_2", "auto: flash_attention_2 (flash-attn installed, GPU)"
    return "sdpa", "auto: sdpa (" + ("no GPU" if device != "cuda" else "flash-attn not installed") + ")"
