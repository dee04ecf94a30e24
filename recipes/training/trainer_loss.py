"""The HF Trainer with its training loss taken from a loss function plugin (``LossFunction.build``).

Why a Trainer subclass: ``Trainer(compute_loss_func=...)`` receives the model's outputs, so the full
logits would already exist; the chunked loss has to run the model itself. Everything else stays the
Trainer's: which ``num_items_in_batch`` it counts over the accumulated batch, whether it divides by
the accumulation steps (it does not when the model accepts loss kwargs, as Qwen2 does, and our loss
divides by ``num_items_in_batch`` as the model's own loss does), evaluation (``return_outputs=True``
keeps the standard path: prediction needs the logits).
"""

from __future__ import annotations

from transformers import Trainer


class PluggableLossTrainer(Trainer):
    """``lm_loss``: ``loss(model, inputs, num_items_in_batch)`` from ``LossFunction.build``; None
    keeps the Trainer's own loss."""

    lm_loss = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.lm_loss is None or return_outputs:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        loss = self.lm_loss(model, inputs, num_items_in_batch)
        if (self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs
                and num_items_in_batch is not None):
            # as Trainer.compute_loss: num_items_in_batch counts every process's labels, DDP averages
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return loss
