"""Built-in quantization backends: ``none`` (full weights) and ``bitsandbytes`` (QLoRA 4-bit, or 8-bit)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from recipes.hookspecs import NoOptions, QuantizationBackend, hookimpl


def _no_kwargs(options, dtype) -> dict:
    return {}


def _keep(model, options, gradient_checkpointing: bool):
    return model


class BitsAndBytesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bits: Literal[4, 8] = Field(4, description="4 (QLoRA) or 8.")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type.")
    double_quant: bool = Field(True, description="Quantize the quantization constants too (4-bit).")
    compute_dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="dtype of the 4-bit matmuls; auto: the stage's precision.")


def _torch_dtype(name: str, fallback):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}.get(name, fallback)


def _bnb_kwargs(options: BitsAndBytesOptions, dtype) -> dict:
    from transformers import BitsAndBytesConfig

    if options.bits == 8:
        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True)}
    return {"quantization_config": BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=options.quant_type,
        bnb_4bit_use_double_quant=options.double_quant,
        bnb_4bit_compute_dtype=_torch_dtype(options.compute_dtype, dtype),
    )}


def _bnb_prepare(model, options: BitsAndBytesOptions, gradient_checkpointing: bool):
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False})


@hookimpl
def register_quantization_backends():
    return [
        QuantizationBackend("none", _no_kwargs, _keep, NoOptions, quantizes=False,
                            description="Full weights in the stage's precision (LoRA)."),
        QuantizationBackend("bitsandbytes", _bnb_kwargs, _bnb_prepare, BitsAndBytesOptions, quantizes=True,
                            description="bitsandbytes 4-bit (QLoRA: nf4/fp4, double quant) or 8-bit weights."),
    ]
