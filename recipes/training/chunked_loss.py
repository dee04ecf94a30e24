"""The causal-LM loss without the full logits: the output layer and cross-entropy in chunks of
positions, only at the positions that carry a label.

Why: Qwen's vocabulary has 151,936 tokens, so the logits of a 4 x 1024 batch are 2.5 GB in fp32 and
transformers' loss keeps several more tensors of that size (the upcast logits, log-softmax, their
gradient). In SFT only the answer tokens carry a label, yet the logits are computed everywhere.
torch and transformers offer no chunked linear + cross-entropy on CPU (Liger's fused kernel is
Triton, GPU only), hence this module.

How:

1. The model runs its own forward (peft, DDP and gradient checkpointing all apply as usual) with a
   forward pre-hook on its output layer: the hook keeps the final hidden states and hands the layer
   an empty slice of them, so the model computes no logits at all. Without ``labels`` in its inputs
   the model computes no loss either.
2. The hidden states are shifted (position t predicts label t+1, as transformers' ``ForCausalLMLoss``
   shifts) and only the positions whose label is not -100 are kept.
3. ``_LinearCrossEntropy`` goes over those positions in chunks: logits = h @ W^T (+ b) in the layer's
   dtype, upcast to fp32 as transformers does, log-sum-exp, the summed cross-entropy. When gradients
   are wanted it computes each chunk's gradient right there, from the same logits buffer (softmax
   minus one-hot, then the two matmuls), and keeps only the gradients: dL/dh (as large as h) and,
   when the output weight is trainable (tied embeddings with ``modules_to_save``, full training),
   dL/dW. The backward pass scales them by the incoming gradient. This is Liger's scheme: the same
   memory bound as recomputing each chunk in the backward pass (one chunk of logits alive at a time)
   with one vocabulary-sized matmul per chunk fewer.
4. The sum is divided like transformers divides it: by ``num_items_in_batch`` when the Trainer gives
   it (gradient accumulation), else by the number of labels here. So the loss and its curve equal the
   standard path's (tests/test_chunked_loss.py checks loss and LoRA gradients, padded and packed).

Precision (issue 18): the loop runs after ``model.forward`` returns, i.e. outside accelerate's
autocast. ``chunk_precision(device_type, dtype, loss_scale)`` (set by StageTrainer) gives it the
compute dtype: a head already in it (the stage loads the model in its precision, and the QLoRA
preparation keeps the head there) needs nothing; a frozen fp32 head is cast once per call, before the
loop; a trainable fp32 head runs the loop under ``torch.autocast(device_type, dtype)``, which casts
it once and caches the cast. Either way the logits GEMMs run in the compute dtype as on the standard
path. When those GEMMs
run in fp16, each chunk's softmax-minus-one-hot is multiplied by the GradScaler's scale / the divisor
*before* the cast to fp16 (the standard path's backward sees ``scale/N`` times it too), and backward
divides that factor out again: fp16 never holds the unscaled ~1e-6 softmax entries (subnormals).
"""

from __future__ import annotations

import contextlib
import contextvars
import math

import torch
import torch.nn.functional as F

from recipes.data.tokenization import IGNORE_INDEX
from recipes.errors import RecipeError

# config keys that change the logits after the output layer; the chunked path would ignore them
_HEAD_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")

# (device type, autocast dtype or None, the GradScaler's current scale)
_PRECISION: contextvars.ContextVar = contextvars.ContextVar("chunk_precision", default=("cpu", None, 1.0))
# where the loss puts each labelled position's cross-entropy (detached), while ``token_losses`` is on
_TOKEN_LOSSES: contextvars.ContextVar = contextvars.ContextVar("token_losses", default=None)


@contextlib.contextmanager
def token_losses():
    """Within: the chunked loss appends each labelled position's cross-entropy (detached, fp32, in the
    order of the shifted labels that are not -100) to the list this yields; for the per-source
    training loss (recipes.training.channels)."""
    sink: list = []
    token = _TOKEN_LOSSES.set(sink)
    try:
        yield sink
    finally:
        _TOKEN_LOSSES.reset(token)


@contextlib.contextmanager
def chunk_precision(device_type: str, dtype: torch.dtype | None, loss_scale: float = 1.0):
    """Within: the chunk loop runs under ``torch.autocast(device_type, dtype)`` when the output layer
    is fp32, and prescales fp16 gradients by ``loss_scale`` (see the module's "Precision")."""
    token = _PRECISION.set((device_type, dtype, float(loss_scale)))
    try:
        yield
    finally:
        _PRECISION.reset(token)


def _unwrap(model):
    """The bare CausalLM under DDP's ``.module`` and peft's wrapper."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def output_layer(model) -> torch.nn.Module:
    """The model's output layer, checked to be a plain linear map the chunked path can reproduce:
    refuses a LoRA-wrapped or quantized head and models that transform the logits afterwards."""
    base = _unwrap(model)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    name = type(base).__name__
    hint = 'set loss = "standard" for this model'
    if head is None:
        raise RecipeError(f"chunked loss: {name} has no output layer (get_output_embeddings() is None); {hint}")
    if hasattr(head, "lora_A") or hasattr(head, "base_layer"):
        raise RecipeError(f"chunked loss: the output layer of {name} carries a LoRA adapter; leave lm_head out "
                          f"of lora_target or {hint}")
    weight = getattr(head, "weight", None)
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point() or weight.dim() != 2:
        raise RecipeError(f"chunked loss: the output layer of {name} ({type(head).__name__}) is not a plain "
                          f"floating-point linear layer (quantized?); {hint}")
    config = getattr(base, "config", None)
    for key in _HEAD_TRANSFORMS:
        value = getattr(config, key, None)
        if value not in (None, 1, 1.0):
            raise RecipeError(f"chunked loss: {name} transforms its logits ({key}={value}); {hint}")
    return head


class _LinearCrossEntropy(torch.autograd.Function):
    """sum over i of cross_entropy(hidden[i] @ weight.T + bias, targets[i]), chunk by chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size: int, want_grads: bool, index=None, rows=None,
                grad_scale: float = 1.0, eaft=None):
        need_h, need_w, need_b = (want_grads and flag for flag in ctx.needs_input_grad[:3])
        need_r = rows is not None and want_grads and ctx.needs_input_grad[7]
        ctx.rows_dtype = rows.dtype if rows is not None else None
        if rows is not None:  # trained token rows (recipes.training.token_rows): they replace weight[index]
            rows = rows.to(weight.dtype)
            rows_minus_base = rows - weight[index]
        grad_r = torch.zeros(rows.shape, dtype=torch.float32, device=rows.device) if need_r else None
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if need_b else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        sink = _TOKEN_LOSSES.get()
        for start in range(0, hidden.shape[0], chunk_size):
            h = hidden[start:start + chunk_size]
            t = targets[start:start + chunk_size]
            # [chunk, vocab]: the only large buffer; everything below works in it, in place
            logits = F.linear(h, weight, bias).float()
            if rows is not None:
                logits[:, index] = F.linear(h, rows, bias[index] if bias is not None else None).float()
            picked = logits.gather(1, t[:, None]).squeeze(1)
            weight_each = entropy_weight(logits, *eaft) if eaft is not None else None  # before the in-place ops
            top = logits.amax(dim=1, keepdim=True)
            exp = logits.sub_(top).exp_()  # exp(logits - max), as logsumexp computes it
            norm = exp.sum(dim=1, keepdim=True)
            each = top.squeeze(1) + norm.squeeze(1).log() - picked
            if weight_each is not None:
                each = each * weight_each
            total += each.sum()
            if sink is not None:
                sink.append(each.detach())
            if not (need_h or need_w or need_b or need_r):
                del logits, exp  # freed before the next chunk's buffer is allocated
                continue
            grad = exp.div_(norm)  # softmax
            grad[torch.arange(len(t), device=t.device), t] -= 1.0  # d(sum CE)/d logits
            if weight_each is not None:  # the weight is a constant (detached): it scales each row's gradient
                grad.mul_(weight_each[:, None])
            if need_b:
                grad_b += grad.sum(0)
            if grad_scale != 1.0:  # fp16 GEMMs: scale while still fp32 (undone in backward)
                grad.mul_(grad_scale)
            grad = grad.to(weight.dtype)
            if need_h:
                grad_h[start:start + chunk_size] = grad @ weight
                if rows is not None:
                    grad_h[start:start + chunk_size] += grad[:, index] @ rows_minus_base
            if need_r:
                grad_r += (grad[:, index].t() @ h).float()
            if need_w:
                if grad.dtype == grad_w.dtype:
                    grad_w.addmm_(grad.t(), h)
                else:  # bf16/fp16 layer: its matmul, accumulated in fp32
                    grad_w += grad.t() @ h
            del logits, exp, grad
        ctx.save_for_backward(grad_h, grad_w, grad_b, grad_r)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        ctx.grad_scale = grad_scale
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, grad_b, grad_r = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.dtypes
        scale = grad_out.float()
        prescaled = scale / ctx.grad_scale  # grad_h and grad_w were computed already times grad_scale
        return ((grad_h * prescaled.to(grad_h.dtype)) if grad_h is not None else None,
                (grad_w * prescaled).to(weight_dtype) if grad_w is not None else None,
                (grad_b * scale).to(bias_dtype) if grad_b is not None else None,
                None, None, None, None,
                (grad_r * prescaled).to(ctx.rows_dtype) if grad_r is not None else None, None, None)


def entropy_weight(logits: torch.Tensor, alpha: float, top_k: int) -> torch.Tensor:
    """EAFT's per-position weight (entropy-adaptive fine-tuning, arXiv 2601.02151): the entropy of the
    softmax over the ``top_k`` largest logits, divided by its maximum log(top_k), to the power ``alpha``.
    A position where the model is confident (low entropy) but the label disagrees is a "confident
    conflict": its gradient is what overwrites prior knowledge, and a low weight damps it. No gradient
    flows through the weight."""
    k = min(top_k, logits.shape[1])
    log_p = logits.detach().topk(k, dim=1).values.float().log_softmax(dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1)
    return (entropy / math.log(k)).clamp_min(0.0).pow(alpha) if k > 1 else torch.ones_like(entropy)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         targets: torch.Tensor, chunk_size: int, rows=None, grad_scale: float = 1.0,
                         eaft: tuple[float, int] | None = None) -> torch.Tensor:
    """The summed cross-entropy of ``hidden @ weight.T + bias`` ([N, H] by [V, H]) against ``targets``
    ([N], no ignored entries), never holding more than ``chunk_size`` rows of logits. ``rows``:
    (index, [K, H] trainable rows) that replace ``weight[index]``; their gradient is K x H, not V x H.
    ``grad_scale``: the expected incoming gradient (fp16: loss scale / divisor), applied before the
    gradient's cast. ``eaft``: (alpha, top_k): each position's cross-entropy weighted by
    ``entropy_weight``."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    if not grad_scale > 0:
        grad_scale = 1.0
    index, row_weight = rows if rows is not None else (None, None)
    return _LinearCrossEntropy.apply(hidden, weight, bias, targets, chunk_size, torch.is_grad_enabled(), index,
                                     row_weight, grad_scale, eaft)


def _hidden_states(model, head: torch.nn.Module, inputs: dict) -> torch.Tensor:
    """The model's final hidden states [batch, seq, hidden], from its own forward, with no logits."""
    captured = {}

    def take(module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("input")
        captured["hidden"] = hidden
        return (hidden.narrow(-2, 0, 0), *args[1:]), kwargs  # the layer computes [batch, 0, vocab]

    handle = head.register_forward_pre_hook(take, with_kwargs=True)
    try:
        model(**inputs)
    finally:
        handle.remove()
    if "hidden" not in captured:
        raise RecipeError(f"chunked loss: {type(_unwrap(model)).__name__}'s forward did not call its output layer; "
                          'set loss = "standard" for this model')
    return captured["hidden"]


def chunked_lm_loss(model, inputs: dict, num_items_in_batch=None, *,
                    chunk_size: int, eaft: tuple[float, int] | None = None) -> torch.Tensor:
    """The causal-LM loss of ``inputs`` (``input_ids``, ``labels`` and the model's other inputs:
    ``attention_mask``, ``position_ids``...), equal to ``model(**inputs, num_items_in_batch=...).loss``.

    ``num_items_in_batch``: what ``Trainer.compute_loss`` receives (the label count of the whole
    accumulated batch); None divides by this batch's label count, as transformers' mean does.
    ``shift_labels`` (already shifted labels, as padding-free collators send) is honoured like
    transformers honours it. ``eaft`` (alpha, top_k): the training loss is EAFT's entropy-weighted
    cross-entropy; without gradients (evaluation) the plain cross-entropy, so that perplexities stay
    perplexities."""
    head = output_layer(model)
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    shift_labels = inputs.pop("shift_labels", None)
    hidden = _hidden_states(model, head, inputs)
    if shift_labels is None:
        hidden, shift_labels = hidden[:, :-1], labels[:, 1:]
    keep = shift_labels != IGNORE_INDEX
    from recipes.training.token_rows import head_rows

    weight, bias, rows = head_rows(head)  # trained token rows apart: their gradient is rows x hidden
    if weight.dim() != 2 or weight.numel() == 0:  # sharded outside its forward (ZeRO-3, FSDP resharding)
        raise RecipeError(f"chunked loss: the output layer's weight is {tuple(weight.shape)} after the forward pass "
                          '(partitioned by ZeRO-3 or FSDP?); set loss = "standard" with this strategy')
    divisor = keep.sum() if num_items_in_batch is None else num_items_in_batch
    device_type, dtype, loss_scale = _PRECISION.get()
    frozen = not weight.requires_grad and (bias is None or not bias.requires_grad)
    if dtype is not None and weight.dtype == torch.float32 and frozen:
        # a frozen fp32 head: one cast per call here, since autocast would cast it again for every
        # chunk's two GEMMs (it caches casts of trainable leaves only)
        weight, bias = weight.to(dtype), (bias.to(dtype) if bias is not None else None)
    autocast = dtype is not None and weight.dtype == torch.float32
    gemm_dtype = dtype if autocast else weight.dtype
    grad_scale = loss_scale / max(float(divisor), 1.0) if gemm_dtype == torch.float16 else 1.0
    with torch.autocast(device_type, dtype=dtype) if autocast else contextlib.nullcontext():
        total = linear_cross_entropy(hidden[keep].to(weight.dtype), weight, bias, shift_labels[keep], chunk_size,
                                     rows, grad_scale, eaft if torch.is_grad_enabled() else None)
    if torch.is_tensor(divisor):
        divisor = divisor.to(total.device)
    return total / divisor

