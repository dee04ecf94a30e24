"""Built-in quantization backends: ``none`` (full weights) and ``bitsandbytes`` (QLoRA 4-bit, or 8-bit).

Each backend validates its own options (``recipes validate`` runs the options model, no torch), turns
them into ``from_pretrained`` keyword arguments, and prepares the loaded model for LoRA training.

bitsandbytes 0.50.2 loads 4-bit (nf4 and fp4, with or without double quantization, any quant
storage dtype) and 8-bit weights on CPU as well as on CUDA, so the same recipe runs in the tests here
and on a GPU. An option that belongs to the other bit width (``quant_type`` with ``bits = 8``,
``llm_int8_threshold`` with ``bits = 4``) is an error rather than silently ignored.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from recipes.api import NoOptions, QuantizationBackend, hookimpl

# The output head stays unquantized, as transformers does by default; `skip_modules` adds to it
# (transformers' own llm_int8_skip_modules would replace the default and quantize the head).
OUTPUT_HEAD = "lm_head"
FOUR_BIT_ONLY = ("quant_type", "double_quant", "compute_dtype", "quant_storage")
EIGHT_BIT_ONLY = ("llm_int8_threshold",)


def _no_kwargs(options, dtype) -> dict:
    return {}


def _keep(model, options, gradient_checkpointing: bool):
    return model


class BitsAndBytesOptions(BaseModel):
    """``[quantization] backend = "bitsandbytes"`` and its options (flat, beside ``backend``)."""

    model_config = ConfigDict(extra="forbid")

    bits: Literal[4, 8] = Field(4, description="4 (QLoRA) or 8.")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type: nf4 (QLoRA's) or fp4.")
    double_quant: bool = Field(True, description="4-bit: quantize the quantization constants too "
                               "(about 0.37 bit a parameter saved).")
    compute_dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="4-bit: dtype of the matmuls; auto: the stage's precision.")
    quant_storage: Literal["uint8", "bf16", "fp16", "fp32"] = Field(
        "uint8", description="4-bit: dtype the packed weights are stored in; bf16 (or the compute dtype) "
        "for FSDP, which needs every parameter in one dtype.")
    llm_int8_threshold: float = Field(
        6.0, gt=0, description="8-bit: activations above this magnitude go through the 16-bit outlier path "
        "(LLM.int8()).")
    skip_modules: Optional[list[str]] = Field(
        None, description="Module names kept unquantized, besides the output head (lm_head), e.g. [\"mlp.down_proj\"].")

    @field_validator(*FOUR_BIT_ONLY)
    @classmethod
    def _four_bit_only(cls, value, info: ValidationInfo):
        if info.data.get("bits") == 8:
            raise PydanticCustomError("bit_width", f"{info.field_name} applies to 4-bit only; remove it or set bits = 4")
        return value

    @field_validator(*EIGHT_BIT_ONLY)
    @classmethod
    def _eight_bit_only(cls, value, info: ValidationInfo):
        if info.data.get("bits", 4) == 4:
            raise PydanticCustomError("bit_width", f"{info.field_name} applies to 8-bit only; remove it or set bits = 8")
        return value


def _torch_dtype(name: str, fallback):
    import torch

    from recipes.config.schema import TORCH_DTYPE_NAMES

    names = {**TORCH_DTYPE_NAMES, "uint8": "uint8"}
    return getattr(torch, names[name]) if name in names else fallback


def _bnb_kwargs(options: BitsAndBytesOptions, dtype) -> dict:
    from transformers import BitsAndBytesConfig

    skip = [*dict.fromkeys([*(options.skip_modules or []), OUTPUT_HEAD])]
    if options.bits == 8:
        return {"quantization_config": BitsAndBytesConfig(
            load_in_8bit=True, llm_int8_threshold=options.llm_int8_threshold, llm_int8_skip_modules=skip)}
    return {"quantization_config": BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=options.quant_type,
        bnb_4bit_use_double_quant=options.double_quant,
        bnb_4bit_compute_dtype=_torch_dtype(options.compute_dtype, dtype),
        bnb_4bit_quant_storage=_torch_dtype(options.quant_storage, None),
        llm_int8_skip_modules=skip,
    )}


def _bnb_prepare(model, options: BitsAndBytesOptions, gradient_checkpointing: bool):
    """peft's prepare_model_for_kbit_training (peft 0.21) freezes every base parameter and, with
    checkpointing, enables it on the model (``use_reentrant=False``: the checkpointed blocks get
    gradients without the input-embedding hook the reentrant variant needs, and frozen quantized
    blocks still pass gradients to the LoRA weights inside them).

    It also casts every 16-bit parameter that is not a packed quantized weight to fp32: the
    embedding, the output head, the norms and the biases. That is undone here, for three reasons:
    a 7B model's embedding and head alone would take 4.4 GB in fp32 instead of 2.2 GB; an fp32 norm
    weight promotes its output to fp32, so the whole residual stream and every MLP activation would
    be fp32 (twice the activation memory, bitsandbytes returning fp32 too); and a frozen fp32 head
    would be cast to 16 bits again on every use (autocast caches no cast of a frozen weight). These
    parameters are frozen, so their precision is that of the forward pass alone, the trained LoRA
    weights stay fp32 (peft's own), and the norms still compute in fp32 inside (Qwen2's RMSNorm
    upcasts its input)."""
    from peft import prepare_model_for_kbit_training

    loaded = {name: p.dtype for name, p in model.named_parameters()}
    model = prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False})
    for name, parameter in model.named_parameters():
        if parameter.dtype != loaded.get(name, parameter.dtype) and parameter.is_floating_point():
            parameter.data = parameter.data.to(loaded[name])
    for module in model.modules():
        # bitsandbytes repacks 4-bit weights for CPU inference on the first forward in eval mode
        # without gradients (an evaluation before training), and a later training forward on the
        # repacked weights fails; the stage trains, so the weights keep their training layout
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
    return model


@hookimpl
def register_quantization_backends():
    return [
        QuantizationBackend("none", _no_kwargs, _keep, NoOptions, quantizes=False,
                            description="Full weights in the stage's precision (LoRA)."),
        QuantizationBackend("bitsandbytes", _bnb_kwargs, _bnb_prepare, BitsAndBytesOptions, quantizes=True,
                            description="bitsandbytes 4-bit (QLoRA: nf4/fp4, double quant, compute and "
                                        "storage dtype) or 8-bit (LLM.int8()) weights."),
    ]
