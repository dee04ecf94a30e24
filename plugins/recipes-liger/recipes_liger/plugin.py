"""``loss = "liger"`` in a stage: the output layer and the cross-entropy fused in Liger's Triton kernel
(``liger_kernel.transformers.LigerFusedLinearCrossEntropyLoss``), so the 151,936-wide logits of Qwen
are never held for the whole micro-batch.

GPU only: on a machine without CUDA ``build`` refuses with one line naming the way out (the default
``chunked`` loss runs everywhere); with CUDA but without the kernel it says how to install it. The
kernel is imported inside ``build``, so ``recipes validate`` and ``recipes plugins`` need neither
torch nor liger-kernel.

The loss equals transformers' ``model(**inputs, num_items_in_batch=...).loss``: the summed token
cross-entropy over the labels shifted by one, divided by ``num_items_in_batch`` (else by this
batch's label count). ``recipes plan`` counts its logits as the standard loss's (the kernel's chunk
depends on the hidden size, which the hook's ``logit_positions`` does not receive): an overestimate.
"""

from __future__ import annotations

from recipes.api import LossFunction, NoOptions, RecipeError, hookimpl

REQUIRES_RECIPES_API = 1
IGNORE_INDEX = -100
INSTALL = "pip install 'recipes-liger[kernel]' (liger-kernel, with Triton)"


def _bare(model):
    """The CausalLM under DDP's ``.module`` and peft's wrapper."""
    while hasattr(model, "module"):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def head_refusal(head) -> str | None:
    """Why Liger cannot take this output layer, or None. Liger's kernel takes one dense weight and
    returns a dense vocabulary x hidden gradient for it. With trained token rows (``train_tokens``)
    peft's wrapper builds that weight by copying the whole matrix on every call and the rows' gradient
    would be the full matrix's (Qwen-7B: 1.1 GB in bf16, 2.2 GB in fp32, beside the copy); the chunked
    loss trains the rows alone."""
    if getattr(head, "token_adapter", None) is not None:
        return ('loss "liger" with trained token rows (train_tokens) would copy the whole output layer on every '
                "call and make a dense vocabulary x hidden gradient for a few rows: set train_tokens = false, or "
                'loss = "chunked" (which trains the rows alone)')
    return None


def build_liger(model, options):
    import torch

    head = _bare(model).get_output_embeddings()
    refusal = head_refusal(head) if head is not None else None
    if refusal:  # a recipe problem on any machine: said before the GPU check
        raise RecipeError(refusal)
    if not torch.cuda.is_available():
        raise RecipeError('loss "liger" runs Liger\'s fused linear cross-entropy on CUDA GPUs only and this machine '
                          'has none: remove loss = "liger" from the stage (the default "chunked" runs on CPU) or run '
                          "on a GPU")
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError as exc:
        raise RecipeError(f'loss "liger" needs the liger-kernel package ({exc}): {INSTALL}, or set '
                          'loss = "chunked"') from None
    weight = getattr(head, "weight", None)
    if head is None or hasattr(head, "lora_A") or not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        raise RecipeError('loss "liger": the output layer is not a plain floating-point linear layer (a LoRA '
                          'adapter on lm_head? quantized?); leave lm_head out of lora_target or set loss = "chunked"')
    fused = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="sum")

    def loss(model, inputs: dict, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        shift_labels = inputs.pop("shift_labels", None)
        captured = {}

        def take(module, args, kwargs):
            hidden = args[0] if args else kwargs.pop("input")
            captured["hidden"] = hidden
            return (hidden.narrow(-2, 0, 0), *args[1:]), kwargs  # the head computes [batch, 0, vocab]

        handle = head.register_forward_pre_hook(take, with_kwargs=True)
        try:
            model(**inputs)
        finally:
            handle.remove()
        hidden = captured["hidden"]
        if shift_labels is None:
            hidden, shift_labels = hidden[:, :-1], labels[:, 1:]
        hidden = hidden.reshape(-1, hidden.shape[-1]).to(head.weight.dtype)
        targets = shift_labels.reshape(-1)
        total = fused(head.weight, hidden, targets, getattr(head, "bias", None))
        if num_items_in_batch is None:
            return total / (targets != IGNORE_INDEX).sum()
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(total.device)
        return total / num_items_in_batch

    return loss


@hookimpl
def register_loss_functions():
    return [LossFunction("liger", build_liger, NoOptions, description=(
        "Liger's fused linear cross-entropy (Triton): the output layer and the loss in one kernel, on CUDA "
        "GPUs only (needs liger-kernel)."))]
