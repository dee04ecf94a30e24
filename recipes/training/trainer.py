"""The HF Trainer as a stage uses it: its training loss from a loss plugin, every micro-batch's loss
and every gradient checked, and its arguments built from the stage's settings.

Why a Trainer subclass: ``Trainer(compute_loss_func=...)`` receives the model's outputs, so the full
logits would already exist; the chunked loss has to run the model itself. Everything else stays the
Trainer's: which ``num_items_in_batch`` it counts over the accumulated batch, whether it divides by
the accumulation steps (it does not when the model accepts loss kwargs, as Qwen2 does, and our loss
divides by ``num_items_in_batch`` as the model's own loss does). Evaluation goes through the same loss
(``evaluate``: a mean over labelled tokens, no full logits).

The guards, so that stopping never loses work:

- A non-finite loss stops the stage, naming the step (or, with ``skip_nonfinite_batches = N``, up to
  N such batches add no gradient and training goes on); a non-finite gradient stops it too. Nothing
  is saved after the bad step, so the last checkpoint is a good one.
- fp16: the GradScaler's overflow steps are expected (it skips the step and lowers the scale), so a
  non-finite gradient is fatal only without an active scaler, or once the scale has fallen below 1.
- Under DeepSpeed the engine steps (and zeroes the gradients) inside ``backward``, before any callback:
  the gradient check reads the engine's global gradient norm instead, and says once if it has none.
- Several processes: the verdict is all-reduced, so a NaN on one rank stops every rank at that step;
  a Ctrl-C too (``recipes.training.interrupts``).
- The last step always leaves a checkpoint: publishing can be redone without training again.
- Each complete checkpoint is reported (to the manifest) only once the Trainer has written all of
  it, so a checkpoint cut short by a crash is never resumed from.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from recipes.errors import RecipeError, TrainingError
from recipes.training import distributed
from recipes.config.schema import FSDP2_RESHARD_AFTER_FORWARD
from recipes.training.distributed import agreed_stop
from recipes.training.interrupts import STOP

log = logging.getLogger("recipes")


class NonFiniteError(TrainingError):
    def __init__(self, step: int, what: str):
        self.step, self.what = step, what
        super().__init__(f"{what} at step {step}")


class StageTrainer(Trainer):
    """The HF Trainer with the stage's loss function and a check of every micro-batch's loss.

    ``lm_loss``: ``loss(model, inputs, num_items_in_batch)`` from ``LossFunction.build`` (None keeps
    the Trainer's own loss); ``skip_limit``: how many non-finite batches may be skipped."""

    def __init__(self, *args, lm_loss=None, skip_limit: int = 0, eval_collator=None, channels=None,
                 loraplus_lr_ratio: float | None = None, embedding_learning_rate: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lm_loss, self.skip_limit, self.skipped = lm_loss, skip_limit, 0
        self.loraplus_lr_ratio, self.embedding_learning_rate = loraplus_lr_ratio, embedding_learning_rate
        self.eval_collator = eval_collator  # dataset -> its collator (packed rows or padded sequences)
        self.channels = channels  # recipes.training.channels.Channels: the per-source loss, or None
        trainer = weakref.ref(self)  # a closure over self would keep the finished trainer in a cycle
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, StageGuard):
                callback.scaler = lambda: active_scaler(trainer().accelerator) if trainer() is not None else None
                accelerator = self.accelerator  # not self: the guard must not keep the trainer alive
                callback.engine = lambda: engine_grad_norm(accelerator)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        sources = inputs.pop("sources", None)  # each token's source: not a model input
        if sources is not None and self.channels is not None and not return_outputs:
            from recipes.training.chunked_loss import token_losses

            with token_losses() as recorded:
                result = self._loss(model, inputs, return_outputs, num_items_in_batch)
            self.channels.add(sources, inputs["labels"], recorded)
        else:
            result = self._loss(model, inputs, return_outputs, num_items_in_batch)
        loss = result[0] if return_outputs else result
        if not distributed.any_rank(not bool(torch.isfinite(loss.detach()).all())):
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

    def _loss(self, model, inputs, return_outputs, num_items_in_batch):
        if self.lm_loss is None or return_outputs:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        with self._loss_precision():
            loss = self.lm_loss(model, inputs, num_items_in_batch)
        if (self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs
                and num_items_in_batch is not None):
            # as Trainer.compute_loss: num_items_in_batch counts every process's labels, DDP averages
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return loss


    def create_optimizer(self, *args, **kwargs):
        """The Trainer's optimizer, or with ``loraplus_lr_ratio`` peft's LoRA+ optimizer (B matrices at
        learning_rate x ratio); then the trained token rows in a group of their own at
        ``embedding_learning_rate``. The scheduler, built after this, scales every group alike."""
        if self.optimizer is None and self.loraplus_lr_ratio is not None:
            from peft.optimizers import create_loraplus_optimizer

            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            optimizer_kwargs.pop("lr", None)
            # peft's own default for LoRA on embedding layers is 1e-6 whatever learning_rate is: never left implicit
            self.optimizer = create_loraplus_optimizer(
                self.model, optimizer_cls, lr=self.args.learning_rate, loraplus_lr_ratio=self.loraplus_lr_ratio,
                loraplus_weight_decay=self.args.weight_decay,
                loraplus_lr_embedding=self.embedding_learning_rate or self.args.learning_rate, **optimizer_kwargs)
        optimizer = super().create_optimizer(*args, **kwargs)
        if self.embedding_learning_rate is not None:
            rows_in_group(optimizer, [p for n, p in self.model.named_parameters()
                                      if p.requires_grad and "trainable_tokens_delta" in n],
                          self.embedding_learning_rate)
        return optimizer

    def log(self, logs: dict, *args, **kwargs) -> None:
        """The Trainer's, with the per-source losses beside each logged training loss."""
        if self.channels is not None and "loss" in logs:
            logs.update(self.channels.take())
        super().log(logs, *args, **kwargs)

    def _loss_precision(self):
        from recipes.training.chunked_loss import chunk_precision

        dtype = torch.bfloat16 if self.args.bf16 else torch.float16 if self.args.fp16 else None
        scaler = active_scaler(self.accelerator)
        return chunk_precision(self.args.device.type, dtype, scaler.get_scale() if scaler is not None else 1.0)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """Each evaluation set through the stage's loss (no full logits, whatever the vocabulary), its
        loss the mean over all its labelled tokens, so that packed and unpacked evaluation agree (the
        Trainer's loop builds the logits and averages the batches' means). Logged and handed to the
        callbacks as the Trainer's are. Under FSDP or DeepSpeed the Trainer's own loop runs (it wraps
        the model for them)."""
        target = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(target, dict) or self.lm_loss is None or self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        loss, tokens = self.token_loss(self.sharded_eval_dataloader(eval_dataset))
        metrics = {f"{metric_key_prefix}_loss": loss, f"{metric_key_prefix}_tokens": tokens}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def get_eval_dataloader(self, eval_dataset=None):
        """The Trainer's, with the collator that fits the set (the plan's matrix mixes packed SFT rows
        and padded pre-training blocks)."""
        dataset = self.eval_dataset[eval_dataset] if isinstance(eval_dataset, str) else eval_dataset
        if self.eval_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        saved, self.data_collator = self.data_collator, self.eval_collator(
            dataset if dataset is not None else self.eval_dataset)
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = saved

    def sharded_eval_dataloader(self, eval_dataset=None):
        """The evaluation dataloader, each example on exactly one process. accelerate's default
        (``even_batches``) pads the last batches with examples from the start, so that every process
        takes as many batches as the others; the Trainer's own loop drops those again
        (``gather_for_metrics``), but ``token_loss`` sums raw counts, so they would count twice. Here no
        process waits on another inside the loop (no collective call until the final sums), so uneven
        shards are fine."""
        even = self.accelerator.even_batches
        self.accelerator.even_batches = False
        try:
            return self.get_eval_dataloader(eval_dataset)
        finally:
            self.accelerator.even_batches = even

    def token_loss(self, dataloader) -> tuple[float, int]:
        """(mean cross-entropy over every labelled token of ``dataloader``, their count), summed over
        the processes; no gradient. Under the autocast accelerate gives the training forward (it wraps
        ``forward`` only when ``train()`` prepares the model), so that an evaluation before training
        computes in the same precision as one after."""
        from recipes.data.tokenization import IGNORE_INDEX

        model, device = self.model, self.args.device
        training = model.training
        total = torch.zeros((), dtype=torch.float64, device=device)
        count = torch.zeros((), dtype=torch.int64, device=device)
        model.eval()
        try:
            with torch.no_grad():
                for inputs in dataloader:
                    inputs = self._prepare_inputs(inputs)
                    inputs.pop("sources", None)
                    labels = (inputs["labels"][..., 1:] != IGNORE_INDEX).sum()  # shifted, as the loss counts
                    if not int(labels):
                        continue
                    with self.accelerator.autocast(), self.compute_loss_context_manager(), self._loss_precision():
                        loss = self.lm_loss(model, inputs, labels)
                    total += loss.detach().double() * labels
                    count += labels
        finally:
            model.train(training)
        if distributed.world_size() > 1:
            import torch.distributed as dist

            dist.all_reduce(total)
            dist.all_reduce(count)
        return (float(total / count) if int(count) else float("nan")), int(count)


def rows_in_group(optimizer, rows: list, lr: float) -> None:
    """Move ``rows`` (parameters) out of the optimizer's groups into one of their own at ``lr``, with
    the weight decay of the group they were in. Before the first step: no optimizer state moves."""
    if not rows:
        return
    ids = {id(p) for p in rows}
    decay = 0.0
    for group in optimizer.param_groups:
        if any(id(p) in ids for p in group["params"]):
            decay = group.get("weight_decay", 0.0)
            group["params"] = [p for p in group["params"] if id(p) not in ids]
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
    optimizer.add_param_group({"params": rows, "lr": lr, "weight_decay": decay})


def active_scaler(accelerator):
    """accelerate's GradScaler when fp16 uses one (None otherwise)."""
    scaler = getattr(accelerator, "scaler", None)
    return scaler if scaler is not None and scaler.is_enabled() else None


def gradient_is_fatal(finite: bool, scaler) -> bool:
    """Whether a step's gradient stops the stage. With an active GradScaler, a non-finite gradient is
    its expected overflow: ``scaler.step`` skips the step and ``update`` lowers the scale; only once
    the scale is below 1 is it no overflow but a real inf/NaN."""
    if finite:
        return False
    return scaler is None or scaler.get_scale() < 1.0


def engine_grad_norm(accelerator) -> tuple[bool, float | None]:
    """(whether an engine steps inside backward, the global gradient norm it computed). DeepSpeed runs
    its whole optimizer step, zeroing the gradients, inside ``accelerator.backward``: by the time the
    Trainer's pre-optimizer-step callback runs, no ``.grad`` is left to check, and the engine's own norm
    is the only view of the step's gradient. (False, None) without DeepSpeed."""
    wrapped = getattr(accelerator, "deepspeed_engine_wrapped", None)
    if wrapped is None:
        return False, None
    return True, wrapped.get_global_grad_norm()


def gradient_finite(model, engine: tuple[bool, float | None] = (False, None)) -> bool | None:
    """Whether this step's gradient is finite: from the trainable weights' ``.grad``, or under an engine
    that has already stepped (``engine_grad_norm``) from its global norm; None when neither shows it."""
    stepped, norm = engine
    if stepped:
        if norm is None:
            return None
        return bool(torch.isfinite(torch.as_tensor(norm, dtype=torch.float64)).all())
    grads = [p.grad.detach().float().norm() for p in model.parameters() if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.stack(grads)).all())


class StageGuard(TrainerCallback):
    def __init__(self, on_checkpoint, scaler=lambda: None, engine=lambda: (False, None)):
        self.on_checkpoint = on_checkpoint  # (folder, step) -> None, once a checkpoint is complete
        self.scaler = scaler  # () -> the active GradScaler or None (StageTrainer sets it)
        self.engine = engine  # () -> engine_grad_norm(the accelerator) (StageTrainer sets it)
        self.unseen_said = False

    def on_train_begin(self, args, state, control, **kwargs):
        STOP.training = True

    def on_train_end(self, args, state, control, **kwargs):
        STOP.training = False

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        finite = gradient_finite(model, self.engine())
        if finite is None:  # the engine stepped and kept no norm: say so once, do not pretend to check
            if not self.unseen_said:
                log.warning("step %d: DeepSpeed reports no gradient norm, so the non-finite-gradient check "
                            "cannot see this stage's gradients (the non-finite-loss check still runs)",
                            state.global_step + 1)
                self.unseen_said = True
            finite = True
        scaler = self.scaler()
        if distributed.any_rank(gradient_is_fatal(finite, scaler)):
            raise NonFiniteError(state.global_step + 1, "the gradient is non-finite"
                                 + (f" with the fp16 loss scale at {scaler.get_scale():g}" if scaler else ""))
        if not finite:
            log.info("step %d: fp16 overflow; the GradScaler skips this step and lowers its scale (%g)",
                     state.global_step + 1, scaler.get_scale())

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_save = True  # the final state too, so that publishing can be redone
            control.should_log = True  # the last step always (max_steps below logging_steps: 2 points)
        if agreed_stop():  # every process together, at this same step
            control.should_save = True
            control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        self.on_checkpoint(Path(args.output_dir) / f"checkpoint-{state.global_step}", state.global_step)


def sharding_arguments(distributed, device: str, layer_classes) -> dict:
    """The Trainer's own FSDP (version 2) or DeepSpeed settings for the recipe's [distributed] strategy."""
    if distributed is None or distributed.strategy == "ddp":
        return {}
    if device != "cuda":
        raise RecipeError(f"distributed.strategy: {distributed.strategy} needs GPUs; on CPU use \"ddp\"")
    if distributed.strategy == "fsdp":
        sharding = distributed.fsdp_sharding or "full_shard"
        if sharding not in FSDP2_RESHARD_AFTER_FORWARD:  # recipes validate refuses it first
            raise RecipeError(f"distributed.fsdp_sharding: {sharding!r} is FSDP1's; use \"full_shard\" or \"shard_grad_op\"")
        config = {"version": 2, "reshard_after_forward": FSDP2_RESHARD_AFTER_FORWARD[sharding],
                  "transformer_layer_cls_to_wrap": list(layer_classes or [])}
        if distributed.cpu_offload:
            config["cpu_offload"] = True
        return {"fsdp": True, "fsdp_config": config}
    zero = {"stage": distributed.zero_stage or 2}
    if distributed.cpu_offload:
        zero["offload_optimizer"] = {"device": "cpu"}
    return {"deepspeed": {"zero_optimization": zero, "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
                          "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
                          "gradient_accumulation_steps": "auto", "gradient_clipping": "auto"}}


def training_arguments(stage, precision: str, device: str, distributed_settings=None, layer_classes=None):
    """``TrainingArguments`` from a stage's settings (``StagePlan``)."""
    s = stage.settings
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in inspect.signature(
        TrainingArguments).parameters else "gradient_checkpointing"
    kwargs = {
        "output_dir": str(stage.checkpoint_dir),
        "per_device_train_batch_size": s.per_device_train_batch_size,
        "gradient_accumulation_steps": s.gradient_accumulation_steps,
        "learning_rate": s.learning_rate,
        "lr_scheduler_type": s.lr_scheduler_type,
        "warmup_steps": s.warmup_steps if s.warmup_steps is not None else s.warmup_ratio,
        "num_train_epochs": s.num_train_epochs,
        "max_steps": s.max_steps or -1,
        "optim": s.optim,
        "adam_beta1": s.adam_beta1,
        "adam_beta2": s.adam_beta2,
        "weight_decay": s.weight_decay,
        "max_grad_norm": s.max_grad_norm,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        checkpointing: s.gradient_checkpointing,
        f"{checkpointing}_kwargs": {"use_reentrant": False},
        "logging_steps": s.logging_steps,
        "logging_first_step": True,
        "eval_strategy": "steps" if s.eval_steps else "no",
        "eval_steps": s.eval_steps,
        "per_device_eval_batch_size": s.per_device_eval_batch_size or s.per_device_train_batch_size,
        "save_strategy": "steps",
        "save_steps": s.save_steps,
        "save_total_limit": s.save_total_limit,
        "report_to": [],
        "neftune_noise_alpha": s.neftune_noise_alpha,
        "seed": s.seed,
        "use_cpu": device == "cpu",
        "dataloader_pin_memory": device == "cuda",
        "disable_tqdm": True,
        "remove_unused_columns": False,
        "ddp_find_unused_parameters": False,  # every LoRA weight takes part in each forward pass
        **sharding_arguments(distributed_settings, device, layer_classes),
        "include_num_input_tokens_seen": "non_padding",
    }
    kwargs["ddp_timeout"] = int(distributed.timeout(getattr(distributed_settings, "timeout_minutes", None))
                                .total_seconds())
    try:
        args = TrainingArguments(**kwargs)
    except ValueError as exc:  # e.g. an optim name the installed libraries do not have
        raise RecipeError(f"stage {stage.name!r}: {exc}") from exc
    return single_process_gpus(args)


def single_process_gpus(args):
    """Never nn.DataParallel: one process uses one GPU (the Trainer would wrap the model in
    DataParallel whenever one process sees several; `recipes run` launches one process per GPU)."""
    if not distributed.launched() and args.n_gpu > 1:
        args._n_gpu = 1
    return args
