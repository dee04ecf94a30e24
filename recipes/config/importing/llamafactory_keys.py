"""LLaMA-Factory's config keys and what the importer makes of each: tables, no logic.

``SETTINGS``: a training key that is a stage setting of ours under the same or another name, and the
value LLaMA-Factory (or the HF Trainer under it) uses when the config leaves the key out; the import
writes that default explicitly, so the recipe trains as the config did rather than with our seed
plan's defaults. ``LEFT_OUT``: keys that have no recipe equivalent, with the reason the written recipe
gives in a comment. Keys in neither table are written as comments too, as unknown, and listed among
the things to check by hand. Sources: LLaMA-Factory's ``src/llamafactory/hparams/*_args.py`` and
transformers' ``TrainingArguments``.
"""

from __future__ import annotations

NO_DEFAULT = object()  # LLaMA-Factory's default is ours as well, or there is none: write only when given

# LLaMA-Factory key -> (our stage setting, LLaMA-Factory's default when the key is absent)
SETTINGS: dict[str, tuple[str, object]] = {
    "lora_rank": ("lora_rank", 8),
    "lora_alpha": ("lora_alpha", None),  # None: lora_rank * 2, as LLaMA-Factory computes it
    "lora_dropout": ("lora_dropout", 0.0),
    "lora_target": ("lora_target", "all"),
    "cutoff_len": ("cutoff_len", 2048),
    "val_size": ("val_size", 0.0),
    "eval_steps": ("eval_steps", NO_DEFAULT),
    "learning_rate": ("learning_rate", 5e-5),
    "lr_scheduler_type": ("lr_scheduler_type", "linear"),
    "warmup_steps": ("warmup_steps", NO_DEFAULT),
    "warmup_ratio": ("warmup_ratio", 0.0),
    "per_device_train_batch_size": ("per_device_train_batch_size", 8),
    "gradient_accumulation_steps": ("gradient_accumulation_steps", 1),
    "num_train_epochs": ("num_train_epochs", 3.0),
    "max_steps": ("max_steps", NO_DEFAULT),  # -1 (unset) is left out
    "optim": ("optim", NO_DEFAULT),
    "adam_beta1": ("adam_beta1", 0.9),
    "adam_beta2": ("adam_beta2", 0.999),
    "weight_decay": ("weight_decay", 0.0),
    "max_grad_norm": ("max_grad_norm", 1.0),
    "logging_steps": ("logging_steps", NO_DEFAULT),
    "save_steps": ("save_steps", NO_DEFAULT),
    "save_total_limit": ("save_total_limit", NO_DEFAULT),
    "seed": ("seed", 42),
    "use_rslora": ("use_rslora", NO_DEFAULT),
    "use_dora": ("use_dora", NO_DEFAULT),
    "loraplus_lr_ratio": ("loraplus_lr_ratio", NO_DEFAULT),
    "loraplus_lr_embedding": ("embedding_learning_rate", NO_DEFAULT),
    "neftune_noise_alpha": ("neftune_noise_alpha", NO_DEFAULT),
}

# PiSSA: pissa_init turns it on, pissa_iter (LLaMA-Factory's default 16; -1: an exact SVD) picks the
# fast SVD's iterations; recipes always publishes the adapter converted (pissa_convert)
PISSA_ITERATIONS = 16

# report_to names -> our callback plugin (a tracker without one is left out with a reason)
TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}

# keys the importer reads itself (the model, the method, data, precision, the chain, exports)
HANDLED = (
    "model_name_or_path", "trust_remote_code", "stage", "finetuning_type", "do_train", "dataset", "dataset_dir",
    "eval_dataset", "output_dir", "adapter_name_or_path", "create_new_adapter", "train_on_prompt", "mask_history",
    "packing", "neat_packing", "bf16", "fp16", "pure_bf16", "disable_gradient_checkpointing", "quantization_bit",
    "quantization_method", "quantization_type", "double_quantization", "deepspeed", "template", "export_dir",
    "export_size", "export_device", "export_legacy_format", "pissa_init", "pissa_iter", "pissa_convert", "report_to",
)

# key -> why the recipe has no such setting (written beside the value as a comment)
LEFT_OUT: dict[str, str] = {
    "max_samples": "recipes trains on every record of a data set; to use fewer, write them to a file of their own",
    "additional_target": "recipes trains the LoRA matrices only (no fully trained extra modules)",
    "preprocessing_num_workers": "data is tokenized once, in one process, and cached",
    "preprocessing_batch_size": "data is tokenized once and cached",
    "dataloader_num_workers": "batches are built in the training process",
    "overwrite_cache": "the tokenization cache is keyed by the data's contents and settings",
    "overwrite_output_dir": "a run folder resumes; `recipes run --restart STAGE` trains a stage afresh",
    "plot_loss": "`recipes report RUN` draws the loss curves",
    "save_only_model": "checkpoints always hold the optimizer state, so that a run resumes exactly",
    "ddp_timeout": "not configurable here",
    "resume_from_checkpoint": "a run resumes from its last checkpoint by itself",
    "per_device_eval_batch_size": "evaluation uses the training batch size",
    "eval_strategy": "evaluation runs before and after a stage, and every eval_steps when set",
    "do_eval": "evaluation runs whenever the stage has val_size or eval_data",
    "flash_attn": "the attention implementation is transformers' default",
    "enable_liger_kernel": "no Liger kernels; the default chunked loss never builds the full logits",
    "use_unsloth": "no Unsloth",
    "mix_strategy": "the data sets of a stage are concatenated",
    "interleave_probs": "the data sets of a stage are concatenated",
    "streaming": "data is tokenized once into a cache, not streamed",
    "tokenized_path": "the tokenization cache is kept by recipes ($RECIPES_CACHE)",
    "enable_thinking": "SFT text is rendered by the model's own chat template",
    "default_system": "SFT text is rendered by the model's own chat template (its default system prompt)",
    "tool_format": "tool calls are rendered by the model's own chat template",
    "cache_dir": "models come from the local HF cache ($HF_HOME) or a local folder",
    "hf_hub_token": "nothing is downloaded",
    "export_quantization_bit": "recipes exports 16/32-bit models; quantize the exported folder with your tool",
    "export_quantization_dataset": "recipes exports 16/32-bit models",
    "export_hub_model_id": "nothing is uploaded; `recipes export` writes a folder",
    "rope_scaling": "the model's config.json decides",
    "lr_scheduler_kwargs": "not configurable here",
}

# left-out keys that change what is trained: also listed among the things to check by hand
CHECK_BY_HAND = ("max_samples", "additional_target", "mix_strategy", "interleave_probs", "enable_thinking",
                 "default_system", "tool_format")

# handled keys that mean nothing in a pre-training stage -> why (a comment in that stage)
NOT_IN_PRETRAINING: dict[str, str] = {
    "packing": "pre-training always packs documents into full blocks",
    "neat_packing": "pre-training always packs documents into full blocks",
    "train_on_prompt": "pre-training trains on every token",
    "mask_history": "pre-training trains on every token",
    "template": "pre-training reads plain text, no chat template",
    "neftune_noise_alpha": "NEFTune is for SFT stages here",
}
