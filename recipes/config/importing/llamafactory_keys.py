"""LLaMA-Factory's config keys and what the importer makes of each: tables, no logic but the rendering
of these tables as Markdown (``render_key_table``), so that the documentation's key table and the
importer cannot disagree.

``SETTINGS``: a training key that is a stage setting of ours under the same or another name, and the
value LLaMA-Factory (or the HF Trainer under it) uses when the config leaves the key out; the import
writes that default explicitly, so the recipe trains as the config did rather than with our seed
plan's defaults. ``HANDLED``: keys the importer reads itself, with what they become. ``LEFT_OUT``:
keys that have no recipe equivalent, with the reason the written recipe gives in a comment
(``CHECK_BY_HAND``: those that change what is trained, also listed among the things to check).
``SECRETS``: keys whose values are never copied anywhere. Keys in no table are written as comments
too, as unknown, and listed among the things to check by hand. Sources: LLaMA-Factory's
``src/llamafactory/hparams/*_args.py`` and transformers' ``TrainingArguments``.
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
    "per_device_eval_batch_size": ("per_device_eval_batch_size", NO_DEFAULT),
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

# step counts that transformers reads as a share of all steps when below 1; a recipe takes a count
FRACTIONAL_STEPS = ("logging_steps", "save_steps", "eval_steps")

# keys the importer reads itself -> what they become in the recipe
HANDLED: dict[str, str] = {
    "model_name_or_path": "`[model] path`; an earlier config's merge `export_dir`: the stage's `base` with "
                          "`chaining = \"merge\"`",
    "model_revision": "`[model] revision` (none written for `main`, the default branch)",
    "trust_remote_code": "`[model] trust_remote_code`",
    "stage": "stage `kind`: pt -> `pretrain`, sft -> `sft`; other stages are refused",
    "finetuning_type": "lora is read; others are refused (recipes trains LoRA and QLoRA)",
    "do_train": "false is refused (the config trains nothing)",
    "dataset": "one `[[stages.data]]` per name (`dataset_info` + `dataset`)",
    "dataset_dir": "each source's `dataset_info` path",
    "eval_dataset": "one `[[stages.eval_data]]` per name",
    "max_samples": "SFT: `max_samples` on every source of the stage; pre-training: a comment and a check line "
                   "(LLaMA-Factory counts documents, recipes counts cutoff_len blocks)",
    "mix_strategy": "concat: nothing (sources without weights are concatenated); interleave_under / _over / _once: "
                    "a `weight` on every training source (`interleave_probs`, else equal) and a check line",
    "interleave_probs": "with an interleave_* `mix_strategy`: each training source's `weight`, in order (recipes' "
                        "weights are shares of tokens, LLaMA-Factory's of examples drawn)",
    "output_dir": "the stage's `name` (its last part); matched against `adapter_name_or_path` and merge configs",
    "adapter_name_or_path": "another config's `output_dir`: the stage's `base` with `chaining = \"continue\"`",
    "create_new_adapter": "with `adapter_name_or_path`: `chaining = \"merge\"`",
    "train_on_prompt": "SFT: each source's `options = { train_on_prompt = true }`",
    "mask_history": "SFT: each source's `options = { mask_history = true }`",
    "packing": "SFT: stage `packing`; pre-training always packs",
    "neat_packing": "SFT: stage `packing = true`",
    "bf16": "stage `precision = \"bf16\"`",
    "pure_bf16": "stage `precision = \"bf16\"`",
    "fp16": "stage `precision = \"fp16\"`",
    "disable_gradient_checkpointing": "stage `gradient_checkpointing = false`",
    "flash_attn": "stage `attn_implementation`: disabled -> eager, sdpa -> sdpa, fa2 -> flash_attention_2; "
                  "auto: ours (auto); fa3: flash_attention_2 and a check line",
    "enable_liger_kernel": "stage `loss = \"liger\"` (the recipes-liger plugin: Liger's fused linear "
                           "cross-entropy; its other kernels have no equivalent)",
    "report_to": "top-level `callbacks`: none -> progress and metrics_jsonl; tensorboard: the default; mlflow, "
                 "wandb, swanlab: adds the recipes-mlflow / recipes-wandb / recipes-swanlab plugin's callback; "
                 "others: no equivalent",
    "pissa_init": "stage `init_lora_weights = \"pissa_niter_N\"` (N: `pissa_iter`, default 16; -1: \"pissa\")",
    "pissa_iter": "with `pissa_init`: the N of `init_lora_weights = \"pissa_niter_N\"` (-1: an exact SVD, \"pissa\")",
    "pissa_convert": "always on: a PiSSA adapter is published converted to a plain LoRA of the original base",
    "quantization_bit": "`[quantization] backend = \"bitsandbytes\"`, `bits` (4-bit: `quant_storage` = the "
                        "precision's dtype, as LLaMA-Factory loads it); configs that differ: each stage's own "
                        "`[stages.quantization]`",
    "quantization_method": "bnb / bitsandbytes; hqq and eetq are refused",
    "quantization_type": "`[quantization] quant_type`",
    "double_quantization": "`[quantization] double_quant`",
    "deepspeed": "`[distributed] strategy`, `zero_stage`, `cpu_offload` from the JSON's zero_optimization; "
                 "configs that differ: the strongest, said per stage",
    "fsdp": "`[distributed] strategy = \"fsdp\"`, `fsdp_sharding`, `cpu_offload`; stages `loss = \"standard\"`",
    "ddp_timeout": "`[distributed] timeout_minutes` (seconds / 60, rounded up; the largest of the configs)",
    "lr_scheduler_type": "stage `lr_scheduler_type`; `cosine_with_min_lr`: `cosine` and a check line (a recipe "
                         "cannot pass its min_lr)",
    "warmup_steps": "stage `warmup_steps`; a value below 1 (a share of all steps): `warmup_ratio`",
    "template": "SFT: a comment and a check line (the model's own chat template renders SFT text)",
    "export_dir": "a later stage's `base` with `chaining = \"merge\"`, else a `recipes export` line to check",
    "export_size": "`recipes export --max-shard-size` in the check line",
    "export_device": "merge configs: the merge is a step of the run",
    "export_legacy_format": "merge configs: the merge is a step of the run",
}

# key -> why the recipe has no such setting (written beside the value as a comment)
LEFT_OUT: dict[str, str] = {
    "additional_target": "recipes trains the LoRA matrices only (no fully trained extra modules); the nearest is "
                         "train_tokens (chosen rows of the embedding and output layer)",
    "preprocessing_num_workers": "tokenization runs in as many processes as there are cores; `recipes prepare "
                                 "--workers N` or RECIPES_DATA_WORKERS sets it",
    "preprocessing_batch_size": "data is tokenized once and cached",
    "dataloader_num_workers": "batches are built in the training process",
    "overwrite_cache": "the tokenization cache is keyed by the data's contents and settings",
    "overwrite_output_dir": "a run folder resumes; `recipes run --restart STAGE` trains a stage afresh",
    "plot_loss": "`recipes report RUN` draws the loss curves",
    "save_only_model": "checkpoints always hold the optimizer state, so that a run resumes exactly",
    "resume_from_checkpoint": "a run resumes from its last checkpoint by itself",
    "eval_strategy": "evaluation runs before and after a stage, and every eval_steps when set",
    "do_eval": "evaluation runs whenever the stage has val_size or eval_data",
    "use_unsloth": "no Unsloth",
    "streaming": "data is tokenized once into a cache, not streamed",
    "tokenized_path": "the tokenization cache is kept by recipes ($RECIPES_CACHE)",
    "enable_thinking": "SFT text is rendered by the model's own chat template (the nearest: the messages "
                       "format's option train_on_reasoning = false)",
    "default_system": "SFT text is rendered by the model's own chat template (its default system prompt)",
    "tool_format": "tool calls are rendered by the model's own chat template",
    "cache_dir": "models come from the local HF cache ($HF_HOME) or a local folder",
    "export_quantization_bit": "recipes exports 16/32-bit models; quantize the exported folder with your tool",
    "export_quantization_dataset": "recipes exports 16/32-bit models",
    "export_hub_model_id": "nothing is uploaded; `recipes export` writes a folder",
    "rope_scaling": "the model's config.json decides",
    "lr_scheduler_kwargs": "a recipe cannot pass scheduler arguments",
    "fsdp_config": "decoder layers are wrapped; read beside fsdp",
    "fsdp_transformer_layer_cls_to_wrap": "decoder layers are wrapped",
    "swanlab_project": "the SwanLab project and run are named after the recipe",
    "swanlab_run_name": "the SwanLab run is named after the recipe",
    "swanlab_workspace": "SwanLab's own login decides the workspace",
    "swanlab_mode": "recipes-swanlab logs offline unless SwanLab's SWANLAB_MODE says otherwise",
    "swanlab_logdir": "recipes-swanlab logs under <run>/swanlog unless SWANLAB_LOG_DIR says otherwise",
    "swanlab_lark_webhook_url": "SwanLab's notifications are not set up by recipes",
}

# left-out keys that change what is trained: also listed among the things to check by hand
CHECK_BY_HAND = ("additional_target", "enable_thinking", "default_system", "tool_format", "rope_scaling")

# credentials: dropped, their values written nowhere (not in the recipe, not in what is printed)
SECRETS: dict[str, str] = {
    "hf_hub_token": "nothing is downloaded",
    "ms_hub_token": "nothing is downloaded",
    "om_hub_token": "nothing is downloaded",
    "swanlab_api_key": "SwanLab logs in with its own `swanlab login`",
    "swanlab_lark_secret": "SwanLab's notifications are not set up by recipes",
}

# handled keys that mean nothing in a pre-training stage -> why (a comment in that stage)
NOT_IN_PRETRAINING: dict[str, str] = {
    "packing": "pre-training always packs documents into full blocks",
    "neat_packing": "pre-training always packs documents into full blocks",
    "train_on_prompt": "pre-training trains on every token",
    "mask_history": "pre-training trains on every token",
    "template": "pre-training reads plain text, no chat template",
    "neftune_noise_alpha": "NEFTune is for SFT stages here",
}

# keys that mark a file as something other than a training config (first match wins) -> what it is, what to do
NOT_TRAINING: tuple[tuple[tuple[str, ...], str], ...] = (
    (("compute_environment", "distributed_type", "num_processes", "mixed_precision"),
     "an accelerate launcher config, not a training config: leave it out; set the recipe's [distributed] "
     "strategy (\"fsdp\" for its FSDP) and give `recipes run --nproc N` (--nnodes, --node-rank, --master-addr, "
     "--master-port for several machines)"),
    (("task", "n_shot", "task_dir"),
     "a benchmark-evaluation config (llamafactory-cli eval), not a training config: leave it out; recipes "
     "evaluates perplexity on each stage's evaluation sets (eval_data, val_size)"),
    (("do_predict", "predict_with_generate"),
     "a prediction config (generation over a data set), not a training config: leave it out; a recipe's "
     "`samples` are answered after every stage, and `recipes chat RUN` talks to a trained model"),
    (("infer_backend", "infer_dtype", "vllm_maxlen"),
     "an inference config (llamafactory-cli chat / api), not a training config: leave it out; "
     "`recipes chat RUN` talks to a trained model"),
)

# keys of LLaMA-Factory's v1 configs (examples/v1): a different layout, not read by the importer
V1_KEYS = ("model", "model_class", "peft_config", "quant_config", "dist_config", "kernel_config", "init_config",
           "optim_config", "train_dataset", "micro_batch_size", "batching_strategy", "cp_size", "cp_mode",
           "sample_backend")


def render_key_table() -> str:
    """Every key the importer knows and what it makes of it, as a Markdown table (for the docs)."""
    rows = [("`" + key + "`", f"stage `{name}`" + ("" if default in (NO_DEFAULT, None)
                                                   else f" (absent: LLaMA-Factory's {default!r} is written)"))
            for key, (name, default) in SETTINGS.items() if key not in HANDLED]
    rows += [(f"`{key}`", what) for key, what in HANDLED.items()]
    rows += [(f"`{key}`", f"left out: {why}" + (" (a line to check)" if key in CHECK_BY_HAND else ""))
             for key, why in LEFT_OUT.items()]
    rows += [(f"`{key}`", f"left out, its value never copied (a secret): {why}") for key, why in SECRETS.items()]
    rows += [(", ".join(f"`{k}`" for k in keys), "refused: " + what) for keys, what in NOT_TRAINING]
    rows += [(", ".join(f"`{k}`" for k in V1_KEYS), "refused: a LLaMA-Factory v1 config; write the v0 layout")]
    lines = ["| LLaMA-Factory key | in the recipe |", "|---|---|"]
    lines += [f"| {key} | {what.replace('|', '/')} |" for key, what in rows]
    lines.append("| any other key | a comment in the stage and a line to check by hand (unknown to the importer) |")
    return "\n".join(lines) + "\n"
