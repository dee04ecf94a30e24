"""``kind = "dpo"``: TRL's DPOTrainer, its sequence log-probabilities from recipes' chunked loss path.

The reference model is right by construction:

- ``chaining = "merge"`` (the default): the stage starts from the previous stage's merged model with a
  new LoRA, so the reference is the same model with the adapter disabled: the SFT model, no second
  copy in memory. (TRL adds a frozen "ref" copy of any adapter it is handed; here that copy would be
  the untrained adapter, so it is deleted and the adapter is disabled instead.)
- ``chaining = "continue"``: the SFT adapter keeps training, against TRL's frozen "ref" copy of it as
  loaded, i.e. against the SFT model. Disabling the adapter would make the pre-SFT model the
  reference (the "DPO loss is 0 / wrong" reports of continued adapters).

Why not TRL's own log-probabilities: TRL 1.16 computes them with a fused LM head of its own, which
reads ``lm_head.weight`` directly and so would miss the rows that ``train_tokens`` trains for the chat
tokens; recipes' chunked path (``recipes.api.sequence_log_probs``) includes them, never builds the
full logits either, and runs the output layer in the stage's precision. The losses below are TRL's
formulas (``DPOTrainer._compute_loss``) over those log-probabilities; a test checks the loss equals
TRL's own at step 0 within 1e-5.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from recipes.api import KindTrainer, RecipeError, sequence_log_probs

# TRL's loss names (DPOConfig.loss_type) that these log-probabilities support
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust", "bco_pair", "nca_pair", "sppo_hard", "apo_zero", "apo_down",
              "sigmoid_norm", "sft")
LossType = Literal["sigmoid", "hinge", "ipo", "robust", "bco_pair", "nca_pair", "sppo_hard", "apo_zero", "apo_down",
                   "sigmoid_norm", "sft"]


class DPOOptions(BaseModel):
    """A dpo stage's ``kind_options``."""

    model_config = ConfigDict(extra="forbid")
    beta: float = Field(0.1, gt=0, description="How far the policy may move from the reference (TRL's beta).")
    loss_type: Union[LossType, list[LossType]] = Field(
        "sigmoid", description="TRL's loss name, or a list of them combined with loss_weights (e.g. "
        "[\"sigmoid\", \"sft\"]: DPO plus the chosen answers' NLL).")
    loss_weights: Optional[list[float]] = Field(None, description="One weight per loss_type (default: 1 each).")
    rpo_alpha: Optional[float] = Field(None, ge=0, description="Adds the chosen answers' NLL (TRL's \"sft\" "
                                       "loss) with this weight, as RPO does; the same as loss_type = [..., \"sft\"].")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="For the robust loss (cDPO).")
    max_prompt_len: Optional[int] = Field(None, gt=0, description="A longer prompt keeps its last tokens "
                                          "(default: half of cutoff_len).")

    @model_validator(mode="after")
    def _weights(self):
        if self.loss_weights is not None and len(self.loss_weights) != len(self.losses()[0]) - (self.rpo_alpha is not None):
            raise ValueError("give one loss_weights entry per loss_type")
        if self.rpo_alpha is not None and "sft" in self.losses()[0][:-1]:
            raise ValueError("rpo_alpha adds the \"sft\" loss: leave it out of loss_type, or leave rpo_alpha out")
        return self

    def losses(self) -> tuple[list[str], list[float]]:
        """(TRL loss names, their weights), rpo_alpha included."""
        names = [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)
        weights = list(self.loss_weights) if self.loss_weights is not None else [1.0] * len(names)
        if self.rpo_alpha is not None:
            names, weights = names + ["sft"], weights + [self.rpo_alpha]
        return names, weights


def preference_losses(names, weights, beta: float, label_smoothing: float, chosen, rejected, ref_chosen, ref_rejected,
                      chosen_tokens, rejected_tokens):
    """TRL's DPO losses (``DPOTrainer._compute_loss``, reverse KL) from sequence log-probabilities."""
    import torch
    import torch.nn.functional as F

    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
    delta = chosen_ratio - rejected_ratio
    loss = 0.0
    for name, weight in zip(names, weights):
        if name == "sigmoid":
            each = -F.logsigmoid(beta * delta)
        elif name == "hinge":
            each = torch.relu(1 - beta * delta)
        elif name == "ipo":
            each = (chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
                    - 1 / (2 * beta)) ** 2
        elif name == "robust":
            each = (-(1 - label_smoothing) * F.logsigmoid(beta * delta)
                    + label_smoothing * F.logsigmoid(-beta * delta)) / (1 - 2 * label_smoothing)
        elif name == "bco_pair":
            each = -F.logsigmoid(beta * chosen_ratio) - F.logsigmoid(-beta * rejected_ratio)
        elif name == "nca_pair":
            each = (-F.logsigmoid(beta * chosen_ratio) - 0.5 * F.logsigmoid(-beta * chosen_ratio)
                    - 0.5 * F.logsigmoid(-beta * rejected_ratio))
        elif name == "sppo_hard":
            each = (chosen_ratio - 0.5 / beta) ** 2 + (rejected_ratio + 0.5 / beta) ** 2
        elif name == "apo_zero":
            each = 1 - torch.sigmoid(beta * chosen_ratio) + torch.sigmoid(beta * rejected_ratio)
        elif name == "apo_down":
            each = torch.sigmoid(beta * chosen_ratio) + 1 - torch.sigmoid(beta * delta)
        elif name == "sigmoid_norm":
            each = -F.logsigmoid(beta * (chosen_ratio / chosen_tokens.clamp(min=1)
                                         - rejected_ratio / rejected_tokens.clamp(min=1)))
        elif name == "sft":  # the chosen answers' mean token NLL over the batch
            each = (-chosen.sum() / chosen_tokens.sum().clamp(min=1)).expand(chosen.shape[0])
        else:  # pragma: no cover - DPOOptions admits only the names above
            raise RecipeError(f"dpo: loss_type {name!r} is not supported; use one of {', '.join(LOSS_TYPES)}")
        loss = loss + each.mean() * weight
    return loss


def _trainer_class():
    import torch
    from trl import DPOTrainer
    from trl.models.utils import disable_gradient_checkpointing
    from trl.trainer.utils import use_adapter

    class ChunkedDPOTrainer(DPOTrainer):
        """TRL's DPOTrainer; the data comes tokenized (recipes' chat rendering and labels), the log-probs
        from the chunked path."""

        def __init__(self, *args, chunk_size: int, compute_dtype, **kwargs):
            self.chunk_size, self.compute_dtype = chunk_size, compute_dtype
            super().__init__(*args, **kwargs)

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset  # tokenized already: {"prompt_ids", "chosen_ids", "rejected_ids"}

        def log_probs(self, model, inputs):
            return sequence_log_probs(model, inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"],
                                      self.chunk_size, self.compute_dtype)

        def reference_log_probs(self, inputs):
            """The reference: the adapter disabled (a new adapter) or TRL's frozen "ref" copy (continued)."""
            unwrapped = self.accelerator.unwrap_model(self.model)
            with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
                with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                    return self.log_probs(self.model, inputs)

        def _compute_loss(self, model, inputs, return_outputs):
            if return_outputs:
                raise RecipeError("dpo: the chunked log-probabilities compute no logits to return")
            mode = "train" if self.model.training else "eval"
            logps, tokens = self.log_probs(model, inputs)
            ref_logps, _ = self.reference_log_probs(inputs)
            chosen, rejected = logps.chunk(2)
            ref_chosen, ref_rejected = ref_logps.chunk(2)
            chosen_tokens, rejected_tokens = tokens.chunk(2)
            loss = preference_losses(self.loss_types, self.loss_weights, self.beta, self.label_smoothing, chosen,
                                     rejected, ref_chosen, ref_rejected, chosen_tokens, rejected_tokens)
            chosen_rewards = self.beta * (chosen - ref_chosen).detach()
            rejected_rewards = self.beta * (rejected - ref_rejected).detach()
            gather = self.accelerator.gather
            metrics = self._metrics[mode]
            if mode == "train":
                self._total_train_tokens += int(gather(inputs["attention_mask"].sum()).sum().item())
            metrics["num_tokens"] = [self._total_train_tokens]
            metrics["rewards/chosen"].append(gather(chosen_rewards).mean().item())
            metrics["rewards/rejected"].append(gather(rejected_rewards).mean().item())
            metrics["rewards/accuracies"].append(gather((chosen_rewards > rejected_rewards).float()).mean().item())
            metrics["rewards/margins"].append(gather(chosen_rewards - rejected_rewards).mean().item())
            metrics["logps/chosen"].append(gather(chosen.detach()).mean().item())
            metrics["logps/rejected"].append(gather(rejected.detach()).mean().item())
            return loss

    return ChunkedDPOTrainer


def config_from(args, cls, **extra):
    """A TRL config (``cls``: DPOConfig, KTOConfig) with the stage's training arguments, evaluation off
    (the stage evaluates its held-out pairs itself, before and after)."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args)
              if f.init and f.name in fields and not f.name.startswith("_")}
    values.update(eval_strategy="no", eval_steps=None, remove_unused_columns=False, **extra)
    return cls(**values)


def build_dpo(context, data) -> KindTrainer:
    from datasets import Dataset
    from trl import DPOConfig

    options: DPOOptions = context.options
    names, weights = options.losses()
    config = config_from(context.args, DPOConfig, beta=options.beta, loss_type=names, loss_weights=weights,
                         label_smoothing=options.label_smoothing, max_length=None, precompute_ref_log_probs=False,
                         disable_dropout=False)
    model = context.model
    chunk = context.loss_chunk_size or 512
    dtype = _compute_dtype(config)
    trainer = _trainer_class()(model=model, args=config, train_dataset=Dataset.from_list(data.train),
                               processing_class=context.tokenizer, callbacks=context.callbacks, chunk_size=chunk,
                               compute_dtype=dtype)
    reference = _settle_reference(trainer.model, context)
    context.say(f"dpo: beta {options.beta:g}, loss {' + '.join(f'{w:g} x {n}' for n, w in zip(names, weights))}; "
                f"reference: {reference}")
    held = data.evals.get("val", [])
    return KindTrainer(trainer, lambda: {"val": evaluate_pairs(trainer, held)} if held else {})


def _compute_dtype(config):
    import torch

    return torch.bfloat16 if config.bf16 else torch.float16 if config.fp16 else None


def _settle_reference(model, context) -> str:
    """Keep TRL's frozen "ref" adapter for a continued adapter; for a new one, drop the copy (it equals
    the untrained adapter) so the reference is the model with the adapter disabled."""
    if any(name.startswith("frozen") for name in model.peft_config):
        raise RecipeError("dpo: the stage starts from a chain of adapters kept frozen (an earlier stage used "
                          "chaining = \"stack\"); the reference cannot be switched on alone. Use chaining = "
                          "\"merge\" in the stages before it")
    if context.chaining == "continue":
        if "ref" not in model.peft_config:
            raise RecipeError("dpo: TRL added no frozen copy of the continued adapter; upgrade peft (0.20 or later)")
        return f"a frozen copy of the continued adapter ({context.earlier_adapter})"
    if "ref" in model.peft_config:
        model.delete_adapter("ref")  # not the active adapter: "default" stays the one trained
    return "the starting model (the new adapter disabled)"


def evaluate_pairs(trainer, examples: list, batch_size: int | None = None) -> dict:
    """Preference figures on held-out pairs, with the model as it is now: ``accuracy`` (the share of pairs
    whose chosen answer gets the higher implicit reward beta x (log pi - log pi_ref); a tie counts half,
    so the starting point, where policy and reference agree, reads 0.5), ``margin`` (the mean reward
    difference), ``log_prob_accuracy`` (the share where the policy itself gives the chosen answer the
    higher log-probability) and ``pairs``."""
    import torch

    model = trainer.model
    was_training = model.training
    model.eval()
    collate = trainer.data_collator
    size = batch_size or trainer.args.per_device_eval_batch_size
    wins = margin = own = 0.0
    try:
        with torch.no_grad():
            for start in range(0, len(examples), size):
                batch = collate(examples[start:start + size])
                batch = {k: v.to(trainer.args.device) for k, v in batch.items() if hasattr(v, "to")}
                logps, _ = trainer.log_probs(model, batch)
                ref_logps, _ = trainer.reference_log_probs(batch)
                chosen, rejected = logps.float().chunk(2)
                ref_chosen, ref_rejected = ref_logps.float().chunk(2)
                difference = trainer.beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
                wins += float((difference > 0).sum() + 0.5 * (difference == 0).sum())
                margin += float(difference.sum())
                own += float((chosen > rejected).sum())
    finally:
        model.train(was_training)
    count = len(examples)
    return {"accuracy": wins / count, "margin": margin / count, "log_prob_accuracy": own / count, "pairs": count}
