"""``kind = "kto"``: TRL's KTOTrainer on desirable/undesirable answers (LLaMA-Factory's ``kto_tag``,
TRL's ``label``).

The loss, its KL estimate and their log-probabilities are TRL's own: TRL 1.16 computes them with its
fused LM head, in tiles, never the full logits. That head reads ``lm_head.weight`` directly, so rows
trained for the chat tokens (``train_tokens``) would be missed: a kto stage refuses them (it follows an
SFT stage, whose model knows the chat tokens). The reference is chosen as for dpo (the new adapter
disabled, or TRL's frozen "ref" copy of a continued adapter); the data arrives tokenized by recipes
(chat template, labels on the answer), and the KL completions are TRL's: each completion of a batch
paired with the next example's prompt.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from recipes.api import KindTrainer

from recipes_trl.dpo import _compute_dtype, _settle_reference, config_from


class KTOOptions(BaseModel):
    """A kto stage's ``kind_options``."""

    model_config = ConfigDict(extra="forbid")
    beta: float = Field(0.1, gt=0, description="How far the policy may move from the reference (TRL's beta).")
    loss_type: Literal["kto", "apo_zero_unpaired"] = Field("kto", description="TRL's KTO loss name.")
    desirable_weight: float = Field(1.0, gt=0, description="Weight of the desirable answers' losses.")
    undesirable_weight: float = Field(1.0, gt=0, description="Weight of the undesirable answers' losses.")
    max_prompt_len: Optional[int] = Field(None, gt=0, description="A longer prompt keeps its last tokens "
                                          "(default: half of cutoff_len).")


def _trainer_class():
    from trl import KTOTrainer

    class TokenizedKTOTrainer(KTOTrainer):
        """TRL's KTOTrainer on data recipes tokenized: ``{"prompt_ids", "completion_ids", "label"}``."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if not self.calculate_KL:
                return dataset

            def mismatched(examples):  # as TRL does: completions rotated by one within each batch
                examples["KL_completion_ids"] = [examples["completion_ids"][-1]] + examples["completion_ids"][:-1]
                return examples

            return dataset.map(mismatched, batched=True, batch_size=args.per_device_train_batch_size)

    return TokenizedKTOTrainer


def build_kto(context, data) -> KindTrainer:
    from datasets import Dataset
    from trl import KTOConfig

    options: KTOOptions = context.options
    config = config_from(context.args, KTOConfig, beta=options.beta, loss_type=options.loss_type,
                         desirable_weight=options.desirable_weight, undesirable_weight=options.undesirable_weight,
                         max_length=None, precompute_ref_log_probs=False, disable_dropout=False,
                         train_sampling_strategy="sequential")
    trainer = _trainer_class()(model=context.model, args=config, train_dataset=Dataset.from_list(data.train),
                               processing_class=context.tokenizer, callbacks=context.callbacks)
    reference = _settle_reference(trainer.model, context)
    context.say(f"kto: beta {options.beta:g}, {options.loss_type} loss, weights desirable "
                f"{options.desirable_weight:g} / undesirable {options.undesirable_weight:g}; reference: {reference}")
    held = data.evals.get("val", [])
    chunk, dtype = context.loss_chunk_size or 512, _compute_dtype(config)
    return KindTrainer(trainer, lambda: {"val": evaluate_unpaired(trainer, held, chunk, dtype)} if held else {})


def evaluate_unpaired(trainer, examples: list, chunk_size: int, dtype) -> dict:
    """On held-out labelled answers: ``accuracy`` (the share whose implicit reward beta x (log pi - log
    pi_ref) has the label's sign: above 0 for a desirable answer, below for an undesirable one; 0 counts
    half), ``margin`` (the desirable answers' mean reward minus the undesirable ones'), ``examples``."""
    import torch
    from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference
    from trl.trainer.utils import use_adapter

    from recipes.api import sequence_log_probs

    model = trainer.model
    unwrapped = trainer.accelerator.unwrap_model(model)
    collate = DataCollatorForUnpairedPreference(pad_token_id=trainer.processing_class.pad_token_id)
    was_training = model.training
    model.eval()
    size = trainer.args.per_device_eval_batch_size
    wins, rewards = 0.0, {True: [], False: []}
    try:
        with torch.no_grad():
            for start in range(0, len(examples), size):
                part = examples[start:start + size]
                batch = collate(part)
                args = [batch[k].to(trainer.args.device) for k in ("input_ids", "attention_mask", "completion_mask")]
                logps, _ = sequence_log_probs(model, *args, chunk_size=chunk_size, compute_dtype=dtype)
                with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                    ref_logps, _ = sequence_log_probs(model, *args, chunk_size=chunk_size, compute_dtype=dtype)
                reward = trainer.beta * (logps.float() - ref_logps.float())
                for example, value in zip(part, reward.tolist()):
                    signed = value if example["label"] else -value
                    wins += 1.0 if signed > 0 else 0.5 if signed == 0 else 0.0
                    rewards[example["label"]].append(value)
    finally:
        model.train(was_training)
    mean = lambda values: sum(values) / len(values) if values else 0.0  # noqa: E731
    return {"accuracy": wins / len(examples), "margin": mean(rewards[True]) - mean(rewards[False]),
            "examples": len(examples)}
