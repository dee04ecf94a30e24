"""The stage's compute precision: what the recipe's ``precision`` asks, resolved on this machine."""

from __future__ import annotations

import torch

from recipes.config.schema import TORCH_DTYPE_NAMES


def torch_dtype(name: str) -> torch.dtype:
    """``bf16`` / ``fp16`` / ``fp32`` as a torch dtype."""
    return getattr(torch, TORCH_DTYPE_NAMES[name])


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# the first compute capability with bf16 in its tensor cores (Ampere); earlier cards (T4 7.5, V100 7.0)
# only emulate it, which torch.cuda.is_bf16_supported() counts as support by default
BF16_CAPABILITY = 8


def auto_precision(capability: tuple[int, int] | None, name: str = "the GPU") -> tuple[str, str]:
    """(precision, why) for ``precision = "auto"`` from the GPU's compute capability (None: no GPU):
    bf16 on Ampere and later, fp16 before (never emulated bf16), fp32 on CPU."""
    if capability is None:
        return "fp32", "auto: fp32 (no GPU; bf16 on CPU is unusably slow)"
    if capability[0] >= BF16_CAPABILITY:
        return "bf16", f"auto: bf16 (supported by {name})"
    return "fp16", (f"auto: fp16 ({name}, compute capability {capability[0]}.{capability[1]}, only emulates bf16; "
                    f"bf16 needs {BF16_CAPABILITY}.0 or later)")


def gpu_capability() -> tuple[tuple[int, int] | None, str]:
    """(compute capability of this process's GPU, its name), or (None, "") without one."""
    if not torch.cuda.is_available():
        return None, ""
    return tuple(torch.cuda.get_device_capability()), torch.cuda.get_device_name()


def pick_precision(requested: str) -> tuple[str, str]:
    """(precision, why). auto: bf16 where the GPU computes it natively, else fp16 on GPU, else fp32 on CPU."""
    if requested != "auto":
        if requested in ("bf16", "fp16") and not torch.cuda.is_available():
            return requested, f"{requested} as the recipe asks (warning: no GPU; on CPU this is very slow)"
        return requested, f"{requested} as the recipe asks"
    return auto_precision(*gpu_capability())


def flash_attention_available() -> bool:
    """transformers' own check (the flash-attn distribution, a version it supports, CUDA), not merely a
    module named flash_attn: flash-attn 4 installs one of that name too, without the kernels used here."""
    from transformers.utils import is_flash_attn_2_available

    return bool(is_flash_attn_2_available())


def pick_attention(requested: str, device: str, precision: str = "bf16",
                   flash_available: bool | None = None) -> tuple[str, str]:
    """(attn_implementation for from_pretrained, why). auto: flash_attention_2 where transformers finds a
    usable flash-attn, the stage runs on a GPU and computes in bf16 or fp16 (the kernel has no fp32),
    else sdpa. Packed rows work on all three (recipes.data.collate.packed_collator)."""
    from recipes.errors import RecipeError

    if requested != "auto":
        if requested == "flash_attention_2" and device != "cuda":
            raise RecipeError('attn_implementation = "flash_attention_2" needs a GPU; use "auto" or "sdpa" here')
        if requested == "flash_attention_2" and precision == "fp32":
            raise RecipeError('attn_implementation = "flash_attention_2" has no fp32 kernel and this stage trains '
                              'in fp32: set precision = "bf16" (or "auto"), or attn_implementation = "sdpa"')
        return requested, f"{requested} as the recipe asks"
    if device != "cuda":
        return "sdpa", "auto: sdpa (no GPU)"
    if precision == "fp32":
        return "sdpa", "auto: sdpa (the stage trains in fp32, which flash attention does not compute)"
    if flash_available is None:
        flash_available = flash_attention_available()
    if flash_available:
        return "flash_attention_2", "auto: flash_attention_2 (flash-attn usable, GPU)"
    return "sdpa", "auto: sdpa (no usable flash-attn 2 install)"
