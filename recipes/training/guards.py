"""Guards around the training loop, so that stopping never loses work:

- Ctrl-C during training stops at the next step boundary with a checkpoint; a second Ctrl-C stops at
  once (the last checkpoint is then where a re-run resumes). Outside training, Ctrl-C stops at once.
- A non-finite loss stops the stage, naming the step (or, with ``skip_nonfinite_batches = N``, up to
  N such batches add no gradient and training goes on); a non-finite gradient stops it too. Nothing
  is saved after the bad step, so the last checkpoint is a good one.
- The last step always leaves a checkpoint: publishing can be redone without training again.
- Each complete checkpoint is reported (to the manifest) only once the Trainer has written all of
  it, so a checkpoint cut short by a crash is never resumed from.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import TrainerCallback

from recipes.training.trainer_loss import PluggableLossTrainer

from recipes.errors import TrainingError

log = logging.getLogger("recipes")


class NonFiniteError(TrainingError):
    def __init__(self, step: int, what: str):
        self.step, self.what = step, what
        super().__init__(f"{what} at step {step}")


class _Stop:
    """Set by the first Ctrl-C while a stage trains; read at each step boundary."""

    requested = False
    training = False


STOP = _Stop()


@contextmanager
def graceful_interrupts(console):
    """Install the two-stage Ctrl-C handler for the duration of a run (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if STOP.training and not STOP.requested:
            STOP.requested = True
            console.print("[yellow]Ctrl-C: stopping after this step and saving a checkpoint "
                          "(Ctrl-C again stops at once)[/]")
            return
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        STOP.requested = STOP.training = False


class GuardedTrainer(PluggableLossTrainer):
    """The HF Trainer with the stage's loss function and a check of every micro-batch's loss."""

    skip_limit = 0
    skipped = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        loss = result[0] if return_outputs else result
        if bool(torch.isfinite(loss.detach()).all()):
            return result
        step = self.state.global_step + 1
        if self.skipped >= self.skip_limit:
            raise NonFiniteError(step, f"the loss is {loss.detach().float().item()}")
        self.skipped += 1
        log.warning("step %d: non-finite loss (%s); batch skipped (%d of at most %d)", step,
                    loss.detach().float().item(), self.skipped, self.skip_limit)
        # zero, but still attached to the trainable weights: this batch adds no gradient
        zero = sum((p * 0).sum() for p in model.parameters() if p.requires_grad)
        return (zero, result[1]) if return_outputs else zero


class StageGuard(TrainerCallback):
    def __init__(self, on_checkpoint):
        self.on_checkpoint = on_checkpoint  # (folder, step) -> None, once a checkpoint is complete

    def on_train_begin(self, args, state, control, **kwargs):
        STOP.training = True

    def on_train_end(self, args, state, control, **kwargs):
        STOP.training = False

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [p.grad.detach().float().norm() for p in model.parameters() if p.grad is not None]
        if grads and not bool(torch.isfinite(torch.stack(grads)).all()):
            raise NonFiniteError(state.global_step + 1, "the gradient is non-finite")

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_save = True  # the final state too, so that publishing can be redone
        if STOP.requested:
            control.should_save = True
            control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        self.on_checkpoint(Path(args.output_dir) / f"checkpoint-{state.global_step}", state.global_step)
