"""``[quantization] backend = "torchao"``: the base model's linear layers loaded as torchao int8
weight-only tensors (one int8 per weight plus one scale per output row), LoRA trained on top through
peft's torchao layers.

Why int8 weight-only: with torch 2.13 (CPU), transformers 5.24, peft 0.21 and torchao 0.18 it is the
scheme that loads and trains LoRA here. torchao's Int4WeightOnlyConfig fails to load on CPU ("Requires
mslk >= 1.0.0"), and HQQ (hqq 0.2.8) fails in transformers 5.24's loader ("QuantizationMethod.HQQ is
not available yet").

Imports only ``recipes.api`` at module level: torch, transformers and torchao are imported in the
provider's functions, which run only when a stage does.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from recipes.api import QuantizationBackend, RecipeError, hookimpl

REQUIRES_RECIPES_API = 1
OUTPUT_HEAD = "lm_head"
SCALE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


class TorchAoOptions(BaseModel):
    """``[quantization] backend = "torchao"`` and its options (flat, beside ``backend``)."""

    model_config = ConfigDict(extra="forbid")

    scheme: Literal["int8_weight_only"] = Field(
        "int8_weight_only", description="torchao's Int8WeightOnlyConfig: int8 weights, one scale per output row.")
    skip_modules: Optional[list[str]] = Field(
        None, description="Module names kept unquantized, besides the output head (lm_head), e.g. [\"mlp.down_proj\"].")


def model_kwargs(options: TorchAoOptions, dtype) -> dict:
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    skip = [*dict.fromkeys([*(options.skip_modules or []), OUTPUT_HEAD])]
    return {"quantization_config": TorchAoConfig(quant_type=Int8WeightOnlyConfig(), modules_to_not_convert=skip)}


NO_CHECKPOINTING = ("torchao int8 weight-only without gradient checkpointing keeps a full-precision copy of every "
                    "quantized weight alive for the backward pass (its matmul dequantizes the whole weight and "
                    "autograd saves that copy), more memory than not quantizing: set gradient_checkpointing = "
                    "true, or remove [quantization]")


def prepare(model, options: TorchAoOptions, gradient_checkpointing: bool):
    """Freeze the base (peft adds the trainable LoRA weights next) and checkpoint with
    ``use_reentrant=False``, so that frozen blocks still pass gradients to the LoRA weights.

    torchao's int8 matmul computes ``x @ w_int8.to(x.dtype)``: a dequantized copy of the whole weight
    on every call, which autograd saves for the input's gradient. With checkpointing only the layer
    being recomputed holds its copies; without it every layer's stay alive until the backward, so a
    stage without checkpointing is refused."""
    if not gradient_checkpointing:
        raise RecipeError(NO_CHECKPOINTING)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def bytes_per_weight(options: TorchAoOptions, precision: str) -> float:
    """One int8 a weight; the per-row scales (a few bytes per row of thousands) are under 0.2% of it."""
    return 1.0 + SCALE_BYTES.get(precision, 4) / 1024


@hookimpl
def register_quantization_backends():
    return [QuantizationBackend(
        "torchao", model_kwargs, prepare, TorchAoOptions, quantizes=True, bytes_per_weight=bytes_per_weight,
        description="torchao int8 weight-only linear layers (1 byte a weight) under LoRA; merges reload "
                    "the base unquantized.")]
