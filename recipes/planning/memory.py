"""How much memory one training step of a stage needs, per GPU (or, for ``device="cpu"``, the growth
of the process), from the model's shapes and the stage's settings. No torch.

The estimate is for the worst micro-batch: ``per_device_train_batch_size`` sequences of
``cutoff_len`` tokens (pre-training blocks are all that long; SFT batches are padded to their longest
conversation, at most that). T = batch x cutoff_len tokens; b = bytes per value of the compute dtype
(bf16/fp16: 2, fp32: 4; ``precision = "auto"`` is bf16 on a GPU and fp32 on CPU, as the stage picks).

- **weights**: no quantization: every parameter x b (the stage loads the model in its precision).
  bitsandbytes 4-bit: the blocks' linear weights x (0.5 byte + quantization constants: an fp32
  absmax per 64 weights, 4/64 byte; with double quant an 8-bit absmax, 1/64, plus an fp32 constant
  per 256 of those); 8-bit: 1 byte per weight plus an fp32 scale per output row. Everything else
  (embeddings, output head, norms, biases) x b: ``peft.prepare_model_for_kbit_training`` casts it to
  fp32, and the bitsandbytes backend casts it back to the stage's precision (recipes/builtin/
  quantization.py says why), so the residual stream and the activations below are b bytes a value
  with QLoRA too.
- **LoRA weights**: r x (in + out) per wrapped linear layer, fp32 (peft keeps adapters in fp32).
- **gradients**: one fp32 value per trainable parameter.
- **optimizer state**: AdamW keeps two fp32 moments per trainable parameter (8 bytes); the 8-bit
  optimizers (``optim`` containing "8bit") two 8-bit ones (2 bytes); Lion one; plain SGD none.
- **activations**, per token and decoder layer, what autograd keeps for the backward pass with the
  base weights frozen (a frozen linear layer keeps nothing; SDPA/flash attention, no T x T scores):
  the two RMSNorms' fp32 upcast and normalised values (2 x 8 x hidden); query, key, value and the
  attention output, b x (2 query width + 2 kv width); the SwiGLU MLP's gate, its SiLU and up
  projections, b x 3 x mlp width; and the input of every LoRA-wrapped layer: in mixed precision
  autocast keeps a b-byte copy per wrapped layer, in fp32 layers that read the same activation share
  it; LoRA dropout adds a 1-byte mask per wrapped layer (and in fp32 its output, 4 bytes). Without
  gradient checkpointing every layer keeps all of that; with it only each layer's input (b x hidden)
  is kept and one layer at a time is recomputed.
- **logits and loss**: T x vocabulary x 12 bytes. transformers' causal-LM loss upcasts the logits to
  fp32 and ``cross_entropy`` keeps its fp32 log-softmax; at the start of the backward pass the
  gradient of that log-softmax and the gradient of the logits (fp32 each) exist beside it: 3 x 4
  bytes (the forward pass peaks lower: b + 4 + 4). With Qwen's 151,936-token vocabulary this is
  the largest activation term: 12 x 151,936 = 1.8 MB per token.
- **overhead**: ``CUDA_OVERHEAD_BYTES`` on a GPU (CUDA context, cuBLAS workspaces, allocator slack),
  ``CPU_OVERHEAD_BYTES`` on CPU (what the first training step allocates besides tensors).

The total adds every term: it slightly overcounts, since gradients are freed between steps
(``zero_grad(set_to_none=True)``) and do not exist yet when the logits peak.

``bench/memory_estimate.py`` compares the estimate with a measured training step of the demo's first
stage on CPU, and prints it beside Qwen's published LoRA and Q-LoRA memory table.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from recipes.config.schema import StageSettings

# a model's shape comes from its family (recipes.family.ModelFamily.shape_of; Qwen's: qwen_recipes.shapes.Shape)
Shape = Any

GiB = 1024 ** 3
BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
LOSS_BYTES_PER_LOGIT = 12  # fp32 log-softmax + its gradient + the logits' gradient (see above)
NORM_BYTES_PER_WIDTH = 8  # an RMSNorm's fp32 input and normalised values
# Assumed, not measured here (no GPU on the machine this was written on): a CUDA context with torch's
# kernels and cuBLAS workspaces is about 0.5-1 GiB; 1 GiB is the cautious end.
CUDA_OVERHEAD_BYTES = 1 * GiB
# Measured: what the process grows by besides the tensors counted here. For the demo's first stage on
# CPU, `python bench/memory_estimate.py` measured 1,991 MiB of peak RSS growth against 1,829 MiB of
# counted tensors: 160 MiB of thread pools, autograd and allocator state, and the publishing step.
CPU_OVERHEAD_BYTES = 160 * 1024 ** 2


@dataclass
class MemoryEstimate:
    """Bytes per term, for one device."""

    weights: int
    lora_weights: int
    gradients: int
    optimizer: int
    activations: int  # with the stage's gradient_checkpointing setting
    activations_without_checkpointing: int
    activations_with_checkpointing: int
    logits_and_loss: int
    overhead: int
    tokens: int  # per micro-batch
    precision: str
    device: str
    # evaluation (no gradients; the optimizer state and gradients still exist: a stage evaluates
    # between and after its steps): one layer's working set and the loss's logits, at the eval batch
    eval_activations: int = 0
    eval_logits: int = 0
    eval_tokens: int = 0

    @property
    def total(self) -> int:
        return (self.weights + self.lora_weights + self.gradients + self.optimizer + self.activations
                + self.logits_and_loss + self.overhead)

    @property
    def evaluation(self) -> int:
        return (self.weights + self.lora_weights + self.gradients + self.optimizer + self.eval_activations
                + self.eval_logits + self.overhead)

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total, "evaluation": self.evaluation,
                "peak": max(self.total, self.evaluation)}


def resolve_precision(precision: str, device: str) -> str:
    """What ``precision = "auto"`` becomes: bf16 on a GPU, fp32 on CPU (as the stage picks it)."""
    if precision != "auto":
        return precision
    return "bf16" if device == "cuda" else "fp32"


def weight_bytes(shape: Shape, precision: str, quantization: dict | None, bytes_per_weight=None) -> int:
    """The base model's weights as loaded: ``quantization`` is ``{"backend": ..., **options}``;
    ``bytes_per_weight(precision)``: what a plugin backend says each quantized linear weight takes
    (``QuantizationBackend.bytes_per_weight``), the rest counted at the stage's precision."""
    if bytes_per_weight is not None:
        linear = shape.linear_parameters
        return math.ceil(linear * bytes_per_weight(precision)) + (shape.total_parameters - linear) * BYTES[precision]
    if not quantization or quantization.get("backend", "none") != "bitsandbytes":
        return shape.total_parameters * BYTES[precision]
    linear = shape.linear_parameters
    rest = (shape.total_parameters - linear) * BYTES[precision]  # kept in the stage's precision (see above)
    if quantization.get("bits", 4) == 8:
        rows = shape.layers * sum(layer.fan_out for layer in shape.linears)
        return linear + rows * 4 + rest
    constants = (1 / 64 + 4 / (64 * 256)) if quantization.get("double_quant", True) else 4 / 64
    return math.ceil(linear * (0.5 + constants)) + rest


def optimizer_bytes_per_parameter(optim: str) -> int:
    name = optim.lower()
    if name.startswith("sgd"):
        return 0
    if "lion" in name:
        return 1 if "8bit" in name else 4
    if "8bit" in name:
        return 2
    return 8  # AdamW and its variants: two fp32 moments


def layer_activation_bytes(shape: Shape, targets, dropout: float, width: int) -> int:
    """Bytes one decoder layer keeps per token for its backward pass (see the module docstring)."""
    mixed = width < 4
    kept = 2 * NORM_BYTES_PER_WIDTH * shape.hidden
    kept += width * (2 * shape.query_width + 2 * shape.kv_width)  # q, k, v, attention output
    kept += width * 3 * shape.mlp_width  # gate, SiLU(gate), up
    wrapped = shape.targeted(targets)
    if mixed:
        kept += sum(width * layer.fan_in for layer in wrapped)
    else:
        kept += sum(4 * fan_in for fan_in in {layer.reads: layer.fan_in for layer in wrapped}.values())
    if dropout > 0:
        kept += sum((1 if mixed else 5) * layer.fan_in for layer in wrapped)
    return kept


# a loss that holds some positions' logits at a time (the chunked loss: one chunk's fp32 logits, then
# their gradient in place)
CHUNKED_BYTES_PER_LOGIT = 8


def logits_bytes(shape: Shape, tokens: int, positions: int | None = None) -> int:
    """The output layer and loss: every position's logits and their copies with the standard loss
    (``positions`` None); ``positions`` at a time with a loss that says so (the chunked default)."""
    if positions is not None:
        return min(tokens, positions) * shape.vocab * CHUNKED_BYTES_PER_LOGIT
    return tokens * shape.vocab * LOSS_BYTES_PER_LOGIT


def adapter_parameters(shape: Shape, settings: StageSettings) -> int:
    """The adapter's trained parameters: LoRA's A and B, and with DoRA a magnitude per output row of
    each wrapped layer."""
    lora = shape.lora_parameters(settings.lora_target, settings.lora_rank)
    if settings.use_dora:
        lora += shape.layers * sum(layer.fan_out for layer in shape.targeted(settings.lora_target))
    return lora


def dora_bytes(wrapped, width: int) -> tuple[int, int]:
    """DoRA's extra (bytes kept per token per layer, bytes alive at once): peft's DoRA forward keeps
    each wrapped layer's base output and LoRA output (its magnitude scaling multiplies both), and builds
    the whole adapted weight W + BA to take its row norms, one layer at a time, in fp32 at most."""
    kept = sum(2 * width * layer.fan_out for layer in wrapped)
    transient = max((layer.fan_in * layer.fan_out for layer in wrapped), default=0) * 4
    return kept, transient


def estimate_memory(shape: Shape, settings: StageSettings, quantization: dict | None = None,
                    device: str = "cuda", logit_positions=None, bytes_per_weight=None) -> MemoryEstimate:
    """The estimate for one stage: ``settings`` are its resolved settings (``StagePlan.settings``);
    ``logit_positions(tokens)`` says how many positions' logits its loss holds at once (None: all);
    ``bytes_per_weight(precision)`` is a plugin backend's own count (see ``weight_bytes``)."""
    precision = resolve_precision(settings.precision, device)
    width = BYTES[precision]
    lora = adapter_parameters(shape, settings)
    dora_layer, dora_transient = dora_bytes(shape.targeted(settings.lora_target), width) if settings.use_dora else (0, 0)
    tokens = settings.per_device_train_batch_size * settings.cutoff_len
    eval_tokens = (settings.per_device_eval_batch_size or settings.per_device_train_batch_size) * settings.cutoff_len
    layer = layer_activation_bytes(shape, settings.lora_target, settings.lora_dropout, width) + dora_layer
    final_norm = NORM_BYTES_PER_WIDTH * shape.hidden
    without = tokens * (shape.layers * layer + final_norm)
    with_checkpointing = tokens * (shape.layers * width * shape.hidden + layer + final_norm)
    return MemoryEstimate(
        weights=weight_bytes(shape, precision, quantization, bytes_per_weight),
        lora_weights=lora * 4,
        gradients=lora * 4,
        optimizer=lora * optimizer_bytes_per_parameter(settings.optim),
        activations=(with_checkpointing if settings.gradient_checkpointing else without) + dora_transient,
        activations_without_checkpointing=without + dora_transient,
        activations_with_checkpointing=with_checkpointing + dora_transient,
        logits_and_loss=logits_bytes(shape, tokens, logit_positions(tokens) if logit_positions else None),
        overhead=CUDA_OVERHEAD_BYTES if device == "cuda" else CPU_OVERHEAD_BYTES,
        tokens=tokens, precision=precision, device=device,
        eval_activations=eval_tokens * width * (4 * shape.hidden + shape.query_width + 2 * shape.kv_width
                                                + 3 * shape.mlp_width),
        eval_logits=logits_bytes(shape, eval_tokens, logit_positions(eval_tokens) if logit_positions else None),
        eval_tokens=eval_tokens,
    )


def shard(estimate: MemoryEstimate, strategy: str, processes: int, sharding: str | None = None,
          zero_stage: int | None = None, cpu_offload: bool = False) -> MemoryEstimate:
    """The per-GPU share under a distributed strategy of ``processes`` GPUs. DDP replicates everything;
    FSDP full/hybrid shard splits weights, LoRA weights, gradients and optimizer state (shard_grad_op:
    gradients and optimizer state); ZeRO-2 splits gradients and optimizer state, ZeRO-3 the weights
    too. Offload moves FSDP's parameters or DeepSpeed's optimizer state to CPU memory. Activations,
    logits and loss are per GPU in every strategy (each holds its own micro-batch). hybrid_shard is
    counted as sharding over ``processes`` (the GPUs of one node)."""
    from dataclasses import replace

    if strategy == "ddp" or processes <= 1 and not cpu_offload:
        return estimate
    split = {"weights": False, "lora_weights": False, "gradients": True, "optimizer": True}
    if (strategy == "fsdp" and (sharding or "full_shard") != "shard_grad_op") or (
            strategy == "deepspeed" and (zero_stage or 2) == 3):
        split.update(weights=True, lora_weights=True)
    changes = {name: getattr(estimate, name) // max(processes, 1) for name, on in split.items() if on}
    if cpu_offload:
        if strategy == "fsdp":
            changes.update(weights=0, lora_weights=0)
        else:
            changes["optimizer"] = 0
    return replace(estimate, **changes)
