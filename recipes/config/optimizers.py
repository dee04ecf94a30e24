"""The HF Trainer's optimizer names (a stage's ``optim``), checked without importing torch or
transformers, so that ``recipes validate`` catches a wrong name or a missing package in well under
a second instead of failing after the model is loaded.

``OPTIMIZER_NAMES`` is a copy of ``transformers.training_args.OptimizerNames`` (transformers 5.24);
``tests/test_optimizers.py`` fails when the installed transformers has another list, so the copy
cannot drift unnoticed. ``PACKAGE_OF`` says which importable package each one needs, as
``transformers.trainer_optimizer`` checks it; presence is looked up with ``importlib.util.find_spec``
(nothing imported).

Measured on CPU (2-core Zen 3, no GPU) with bitsandbytes 0.50.2, torch 2.13, transformers 5.24,
the tiny Qwen2 model + LoRA, 4 Trainer steps each (``tests/test_optimizers.py`` repeats it):

- ``adamw_bnb_8bit`` / ``adamw_8bit`` run on CPU. bitsandbytes keeps a tensor's Adam state in
  8 bits (uint8, blockwise: ``state1``/``state2`` + ``absmax``) only from 4096 elements up
  (``min_8bit_size``); smaller tensors keep fp32 state: at r=8 every LoRA matrix of the tiny
  model (512 to 2048 elements) does, at r=64 its 64 x 64 ones are 8-bit. On a 256 x 64 tensor, 5 steps moved the weights within 0.0065 of
  torch's AdamW. A 7B model's LoRA matrices (3584 x 16 = 57,344) do get 8-bit state.
- ``paged_adamw_8bit`` / ``paged_adamw_32bit`` (and the other ``paged_*``) also run on CPU: bitsandbytes
  warns "Paged optimizers are not supported on CPU. Falling back to non-paged optimizer behavior."
  and then trains exactly like the unpaged optimizer (same losses step for step). Paging (unified
  memory that spills optimizer state to host RAM under memory pressure) exists only on CUDA.

So a paged optimizer on CPU is a warning (it runs, unpaged), never an error: ``device_note``.
"""

from __future__ import annotations

import importlib.util
from difflib import get_close_matches

# transformers.training_args.OptimizerNames values, in its order (transformers 5.24).
OPTIMIZER_NAMES = (
    "adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adafactor",
    "adamw_anyprecision", "adamw_torch_4bit", "adamw_torch_8bit", "ademamix", "sgd", "adagrad",
    "adamw_bnb_8bit", "adamw_8bit", "ademamix_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit",
    "paged_adamw_8bit", "paged_ademamix_32bit", "paged_ademamix_8bit", "paged_lion_32bit",
    "paged_lion_8bit", "rmsprop", "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit",
    "galore_adamw", "galore_adamw_8bit", "galore_adafactor", "galore_adamw_layerwise",
    "galore_adamw_8bit_layerwise", "galore_adafactor_layerwise", "lomo", "adalomo", "grokadamw",
    "schedule_free_radam", "schedule_free_adamw", "schedule_free_sgd", "apollo_adamw",
    "apollo_adamw_layerwise", "stable_adamw",
)

# The ones bitsandbytes provides (transformers' _BITSANDBYTES_OPTIMIZERS).
BITSANDBYTES = (
    "adamw_bnb_8bit", "adamw_8bit", "ademamix", "ademamix_8bit", "lion_8bit", "lion_32bit",
    "paged_adamw_32bit", "paged_adamw_8bit", "paged_ademamix_32bit", "paged_ademamix_8bit",
    "paged_lion_32bit", "paged_lion_8bit", "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit",
)

# optimizer -> (module to find, what to pip install). The rest are in torch or transformers itself.
PACKAGE_OF: dict[str, tuple[str, str]] = {
    **{name: ("bitsandbytes", "bitsandbytes") for name in BITSANDBYTES},
    **{name: ("galore_torch", "galore-torch") for name in OPTIMIZER_NAMES if name.startswith("galore_")},
    **{name: ("apollo_torch", "apollo-torch") for name in OPTIMIZER_NAMES if name.startswith("apollo_")},
    **{name: ("schedulefree", "schedulefree") for name in OPTIMIZER_NAMES if name.startswith("schedule_free_")},
    "lomo": ("lomo_optim", "lomo-optim"),
    "adalomo": ("lomo_optim", "lomo-optim"),
    "grokadamw": ("grokadamw", "grokadamw"),
    "stable_adamw": ("optimi", "torch-optimi"),
    "adamw_torch_4bit": ("torchao", "torchao"),
    "adamw_torch_8bit": ("torchao", "torchao"),
    "adamw_anyprecision": ("torchdistx", "torchdistx"),
    "adamw_torch_xla": ("torch_xla", "torch_xla (TPU only)"),
    "adamw_torch_npu_fused": ("torch_npu", "torch-npu (Ascend NPU only)"),
}

# Names people write that are not (or no longer) HF names, with the one they mean.
ALIASES = {
    "adamw": "adamw_torch",
    "adam": "adamw_torch",
    "adamw_hf": "adamw_torch",  # removed in transformers 5
    "adamw_apex_fused": "adamw_torch_fused",  # removed in transformers 5
    "adamw_bnb": "adamw_bnb_8bit",
    "adam8bit": "adamw_bnb_8bit",
    "paged_adamw": "paged_adamw_32bit",
    "paged_adam_8bit": "paged_adamw_8bit",
    "lion": "lion_32bit",
}

# QLoRA's own optimizer choice, for the hints.
QLORA_OPTIMIZER = "paged_adamw_8bit"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_optimizer(name: str) -> str | None:
    """None when the Trainer can build ``name`` here; else what to do, in one line (an error).

    Unknown names get the closest known one; a name whose package is missing gets the pip command."""
    if name not in OPTIMIZER_NAMES:
        suggestion = ALIASES.get(name.lower()) or next(iter(get_close_matches(name.lower(), OPTIMIZER_NAMES, 1, 0.6)),
                                                       None)
        hint = f'did you mean "{suggestion}"?' if suggestion else "e.g. adamw_torch, or paged_adamw_8bit for QLoRA"
        return f"unknown optimizer {name!r} (not one of transformers' OptimizerNames); {hint}"
    needed = PACKAGE_OF.get(name)
    if needed and not _installed(needed[0]):
        return f"optimizer {name!r} needs the {needed[0]} package, which is not installed: pip install {needed[1]}"
    return None


# paged optimizer -> the unpaged one it behaves like off CUDA
UNPAGED = {
    "paged_adamw_8bit": "adamw_bnb_8bit", "paged_adamw_32bit": "adamw_torch",
    "paged_ademamix_8bit": "ademamix_8bit", "paged_ademamix_32bit": "ademamix",
    "paged_lion_8bit": "lion_8bit", "paged_lion_32bit": "lion_32bit",
}


def is_paged(name: str) -> bool:
    return name in UNPAGED


def device_note(name: str, device: str) -> str | None:
    """A warning for ``name`` on ``device`` ("cuda" or "cpu"), or None. Paged optimizers page only
    on CUDA; on CPU bitsandbytes runs them unpaged (measured, see the module docstring)."""
    if device != "cuda" and is_paged(name):
        return (f"optimizer {name!r} pages its state only on a CUDA GPU; on {device} bitsandbytes runs it "
                f"unpaged (as {UNPAGED[name]!r} does): fine for a trial run")
    return None
