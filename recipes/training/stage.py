"""Running one stage: tokenizer -> model (through the quantization backend) -> LoRA adapter (peft)
-> dataset (format plugins -> tokens and labels) -> HF Trainer with the plugins' callbacks -> train
-> publish the adapter (PEFT format) and the merged model (HF format, safetensors).

Heavy libraries are imported here, not at the top of the CLI.
"""

from __future__ import annotations

import errno
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from recipes.training import distributed
from recipes.data.tokenization import PadCollator, special_id
from recipes.errors import Interrupted, RecipeError, TrainingError
from recipes.training.guards import STOP, GuardedTrainer, NonFiniteError, StageGuard
from recipes.plugins.hookspecs import StageContext
from recipes.run.manifest import Manifest
from recipes.planning.plan import Plan, StagePlan
from recipes.config.optimizers import device_note
from recipes.run.publish import checksums, publishing
from recipes.data.prepare import prepare

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def pick_precision(requested: str) -> tuple[str, str]:
    """(precision, why). auto: bf16 where the GPU supports it, else fp16 on GPU, else fp32 on CPU."""
    if requested != "auto":
        if requested in ("bf16", "fp16") and not torch.cuda.is_available():
            return requested, f"{requested} as the recipe asks (warning: no GPU; on CPU this is very slow)"
        return requested, f"{requested} as the recipe asks"
    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return "bf16", f"auto: bf16 (supported by {torch.cuda.get_device_name(0)})"
        return "fp16", f"auto: fp16 ({torch.cuda.get_device_name(0)} has no bf16)"
    return "fp32", "auto: fp32 (no GPU; bf16 on CPU is unusably slow)"


@dataclass
class StageResult:
    name: str
    kind: str
    base: str
    precision: str
    steps: int
    first_loss: float | None
    final_loss: float | None
    train_seconds: float
    tokens_seen: int
    trainable_params: int
    total_params: int
    adapter_dir: str
    merged_dir: str
    data: dict
    eval_before: dict | None = None  # per evaluation set: loss and perplexity
    eval_after: dict | None = None
    eval_loss_before: float | None = None  # of the held-out set (or the first evaluation set)
    eval_loss_after: float | None = None
    eval_perplexity_before: float | None = None
    eval_perplexity_after: float | None = None
    peak_memory_bytes: int | None = None


def run_stage(plan: Plan, stage: StagePlan, base_path: str, say, console, manifest: Manifest,
              resume_from: Path | None = None, adapters: list[Path] = ()) -> StageResult:
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    s = stage.settings
    precision, why = pick_precision(s.precision)
    dtype = DTYPES[precision]
    say(f"precision: {why}")
    from_model = stage.base == "model"
    load_kwargs = dict(trust_remote_code=plan.trust_remote_code)
    if from_model and plan.revision:
        load_kwargs["revision"] = plan.revision

    # tokenizer and data first: a data mistake surfaces before the model is loaded
    tokenizer = AutoTokenizer.from_pretrained(base_path, **load_kwargs)
    data = prepare(stage, tokenizer, say)  # one process per node prepares the store, the others poll for it
    stats = data.stats
    for note in stats.notes:
        say(note)
    say(f"data: {stats.records} records -> {stats.examples} sequences, {stats.tokens:,} tokens, "
        f"{stats.label_tokens:,} with a label"
        + (f"; {stats.truncated} truncated to {s.cutoff_len}" if stats.truncated else "")
        + (f"; {stats.dropped} dropped" if stats.dropped else "")
        + "".join(f"; {name}: {len(rows)} held for evaluation" for name, rows in data.evals.items()))
    if data.packing is not None:
        say(data.packing.describe())

    # model through the quantization backend, then LoRA
    set_seed(s.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    note = device_note(s.optim, device)
    if note:
        say(f"warning: {note}")
    backend_kwargs = plan.backend.model_kwargs(plan.backend_options, dtype)
    if plan.backend.quantizes:
        backend_kwargs.setdefault("device_map", {"": 0 if device == "cuda" else "cpu"})
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype, **load_kwargs, **backend_kwargs)
    model = plan.backend.prepare(model, plan.backend_options, s.gradient_checkpointing)
    model.config.use_cache = False
    targets = "all-linear" if s.lora_target == "all" else list(s.lora_target)
    lora = LoraConfig(r=s.lora_rank, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
    try:
        model, frozen = attach_adapters(model, lora, list(adapters), s.chaining, stage, say)
    except ValueError as exc:
        raise RecipeError(f"stage {stage.name!r}: lora_target: {exc}") from exc
    trainable, total = model.get_nb_trainable_parameters()
    say(f"model: {base_path} ({plan.backend.name} backend) + LoRA r={s.lora_rank} alpha={s.lora_alpha:g} "
        f"on {targets if isinstance(targets, str) else ', '.join(targets)}: {trainable:,} trainable of "
        f"{total:,} parameters ({100 * trainable / total:.3f}%)")

    # trainer
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = special_id(tokenizer, "<|endoftext|>") or tokenizer.eos_token_id or 0
    args = training_arguments(stage, precision, device, plan.distributed, getattr(model, "_no_split_modules", None))
    context = StageContext(run_dir=plan.run_dir, stage_name=stage.name, stage_index=stage.index,
                           stage_count=len(plan.stages), console=console,
                           metrics_path=plan.run_dir / "metrics.jsonl")
    callbacks = [cb for cb in (plugin.build(context) for plugin in plan.callbacks) if cb is not None]

    def checkpoint_done(folder: Path, step: int) -> None:
        manifest.update(stage.name, status="running", checkpoint=str(folder.relative_to(plan.run_dir)), step=step)

    if data.packing is not None:
        from recipes.data.packing import PackedCollator, check_packable

        check_packable(model)
        collator = PackedCollator(pad_id)
    else:
        collator = PadCollator(pad_id)
    trainer = GuardedTrainer(model=model, args=args, train_dataset=data.train, eval_dataset=data.evals or None,
                             data_collator=collator,
                             processing_class=tokenizer, callbacks=[*callbacks, StageGuard(checkpoint_done)])
    trainer.skip_limit = s.skip_nonfinite_batches
    provider = plan.losses[s.loss]
    trainer.lm_loss = provider.build(model, provider.options_model())
    for quiet in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(quiet)
    processes = distributed.world_size()
    say(f"training: {len(data.train)} {'rows' if data.packing else 'sequences'}, effective batch "
        f"{stage.effective_batch * processes} ({s.per_device_train_batch_size} x "
        f"{s.gradient_accumulation_steps} accumulation" + (f" x {processes} processes" if processes > 1 else "")
        + "), "
        + (f"{s.max_steps} steps" if s.max_steps else f"{s.num_train_epochs:g} epoch(s)")
        + f", lr {s.learning_rate:g} {s.lr_scheduler_type}; a checkpoint every {s.save_steps} steps")
    if resume_from is not None:
        say(f"resuming from {resume_from.name} (optimizer, scheduler, RNG state and data position)")
    before = (manifest.stage(stage.name) or {}).get("eval_before")
    if data.evals and before is None:
        before = evaluate(trainer)
        manifest.update(stage.name, eval_before=before)
        say("eval before: " + describe_eval(before))
    started = time.monotonic()
    _train(trainer, stage, plan, manifest, resume_from)
    seconds = time.monotonic() - started
    if STOP.requested:
        entry = manifest.stage(stage.name) or {}
        raise Interrupted(f"stage {stage.name!r} stopped at step {trainer.state.global_step} of "
                          f"{trainer.state.max_steps}; checkpoint saved ({entry.get('checkpoint')}). Run the same "
                          "command again to resume from it")
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    after = evaluate(trainer) if data.evals else None
    if after:
        say("eval after:  " + describe_eval(after))
    final = manifest.stage(stage.name).get("checkpoint")
    manifest.update(stage.name, status="trained", checkpoint=final)

    # publish (the main process; the others wait at the next barrier)
    if distributed.is_main():
        keep = f"; the final checkpoint {final} is intact" if final else ""
        with publishing(stage.adapter_dir, stage.merged_dir, keep_note=keep) as (adapter_side, merged_side):
            save_adapter(model, tokenizer, adapter_side)
            if s.chaining == "stack":  # the new adapter applies on the earlier stage's merged model
                point_adapter_at(adapter_side, plan.stage(stage.base).merged_dir)
            merged = merged_model(model, plan, base_path, dtype, load_kwargs, [*frozen, adapter_side])
            if stage.kind == "sft":
                stop_at_turn_end(merged, tokenizer)
            save_merged(merged, tokenizer, merged_side)
    result = StageResult(
        name=stage.name, kind=stage.kind, base=stage.base, precision=precision,
        steps=trainer.state.global_step, first_loss=losses[0] if losses else None,
        final_loss=losses[-1] if losses else None, train_seconds=round(seconds, 2),
        tokens_seen=int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0),
        trainable_params=trainable, total_params=total, adapter_dir=str(stage.adapter_dir),
        merged_dir=str(stage.merged_dir), data={**asdict(stats), "cached": data.cached,
                                                 "packed_rows": data.packing.rows if data.packing else None,
                                                 "packing_efficiency": data.packing.efficiency if data.packing else None},
        eval_before=before, eval_after=after, peak_memory_bytes=peak_memory(),
        **headline_eval(before, after))
    if not distributed.is_main():
        return result
    (stage.folder / "stage.json").write_text(json.dumps(asdict(result), indent=2, ensure_ascii=False))
    outputs = {name: {"path": str(folder.relative_to(plan.run_dir)), "files": checksums(folder)}
               for name, folder in (("adapter", stage.adapter_dir), ("merged", stage.merged_dir))}
    manifest.update(stage.name, status="done", outputs=outputs, result=asdict(result), finished=time.time())
    shutil.rmtree(stage.checkpoint_dir, ignore_errors=True)  # the published adapter is the result now
    return result


def evaluate(trainer) -> dict:
    """Loss and perplexity per evaluation set (the mean of its batches' mean token losses)."""
    import math

    metrics = trainer.evaluate()
    sets = trainer.eval_dataset if isinstance(trainer.eval_dataset, dict) else {"": trainer.eval_dataset}
    out = {}
    for name in sets:
        loss = metrics.get(f"eval_{name}_loss" if name else "eval_loss")
        if loss is not None:
            out[name or "eval"] = {"loss": loss, "perplexity": math.exp(min(loss, 700))}
    return out


def describe_eval(results: dict) -> str:
    return ", ".join(f"{name} loss {r['loss']:.4f} (perplexity {r['perplexity']:,.1f})" for name, r in results.items())


def headline_eval(before: dict | None, after: dict | None) -> dict:
    """The held-out set's figures (else the first set's) as the run report's columns."""
    out = {}
    for when, results in (("before", before), ("after", after)):
        if results:
            first = results.get("val") or next(iter(results.values()))
            out[f"eval_loss_{when}"], out[f"eval_perplexity_{when}"] = first["loss"], first["perplexity"]
    return out


def peak_memory() -> int:
    """Peak GPU memory allocated by torch on a GPU; else the process's peak resident memory."""
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _train(trainer, stage: StagePlan, plan: Plan, manifest: Manifest, resume_from: Path | None):
    """trainer.train(), with failures turned into clear errors that keep the last good checkpoint."""
    if resume_from is not None and _restore_finished(trainer, resume_from):
        return
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except NonFiniteError as exc:
        good = _last_good(stage, plan, manifest)
        manifest.update(stage.name, status="failed", error=str(exc))
        raise TrainingError(f"stage {stage.name!r}: {exc}; {good}. Lower the learning_rate or check the data "
                            "(or set skip_nonfinite_batches)") from None
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        good = _last_good(stage, plan, manifest)
        manifest.update(stage.name, status="failed", error="out of disk space")
        raise TrainingError(f"stage {stage.name!r}: out of disk space while saving a checkpoint; {good}. "
                            "Free space and run the same command again to resume") from None


def _restore_finished(trainer, checkpoint: Path) -> bool:
    """Load a checkpoint saved after the last step (a stage killed while publishing) without training:
    the Trainer would run one more step past max_steps when resumed from it."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import TrainerState

    state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    if not state.max_steps or state.global_step < state.max_steps:
        return False
    set_peft_model_state_dict(trainer.model, load_file(checkpoint / "adapter_model.safetensors"))
    trainer.state = state
    return True


def _last_good(stage: StagePlan, plan: Plan, manifest: Manifest) -> str:
    """Remove checkpoints the manifest does not know as complete; say which one is kept."""
    recorded = (manifest.stage(stage.name) or {}).get("checkpoint")
    for folder in stage.checkpoint_dir.glob("checkpoint-*"):
        if recorded is None or folder != plan.run_dir / recorded:
            shutil.rmtree(folder, ignore_errors=True)
    return f"the last good checkpoint is {recorded}" if recorded else "no checkpoint was saved before it"


def sharding_arguments(distributed, device: str, layer_classes) -> dict:
    """The Trainer's own FSDP or DeepSpeed settings for the recipe's [distributed] strategy."""
    if distributed is None or distributed.strategy == "ddp":
        return {}
    if device != "cuda":
        raise RecipeError(f"distributed.strategy: {distributed.strategy} needs GPUs; on CPU use \"ddp\"")
    if distributed.strategy == "fsdp":
        option = f"{distributed.fsdp_sharding or 'full_shard'} auto_wrap" + (" offload" if distributed.cpu_offload else "")
        return {"fsdp": option, "fsdp_config": {"transformer_layer_cls_to_wrap": list(layer_classes or []),
                                                "use_orig_params": True}}
    zero = {"stage": distributed.zero_stage or 2}
    if distributed.cpu_offload:
        zero["offload_optimizer"] = {"device": "cpu"}
    return {"deepspeed": {"zero_optimization": zero, "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
                          "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
                          "gradient_accumulation_steps": "auto", "gradient_clipping": "auto"}}


def training_arguments(stage: StagePlan, precision: str, device: str, distributed=None, layer_classes=None):
    import inspect

    from transformers import TrainingArguments

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
        "per_device_eval_batch_size": s.per_device_train_batch_size,
        "save_strategy": "steps",
        "save_steps": s.save_steps,
        "save_total_limit": s.save_total_limit,
        "report_to": [],
        "seed": s.seed,
        "use_cpu": device == "cpu",
        "dataloader_pin_memory": device == "cuda",
        "disable_tqdm": True,
        "remove_unused_columns": False,
        "ddp_find_unused_parameters": False,  # every LoRA weight takes part in each forward pass
        **sharding_arguments(distributed, device, layer_classes),
        "include_num_input_tokens_seen": "non_padding",
    }
    try:
        return TrainingArguments(**kwargs)
    except ValueError as exc:  # e.g. an optim name the installed libraries do not have
        raise RecipeError(f"stage {stage.name!r}: {exc}") from exc


def merged_model(model, plan: Plan, base_path: str, dtype, load_kwargs: dict, adapter_dirs: list[Path]):
    """The base with every adapter of the chain merged in. Never merged into quantized weights: for a
    quantizing backend the base is reloaded unquantized in the stage's dtype, and the adapters are
    merged there one by one."""
    if not plan.backend.quantizes:
        return model.merge_and_unload()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype, **load_kwargs)
    for adapter in adapter_dirs:
        merged = PeftModel.from_pretrained(merged, str(adapter)).merge_and_unload()
    return merged


def attach_adapters(model, lora, adapters: list[Path], chaining: str, stage: StagePlan, say):
    """LoRA on the model, as the stage's chaining says. Returns (peft model, the frozen adapters' folders).

    The trained adapter is always named "default" (so that it saves at the top of its folder); earlier
    adapters kept frozen are "frozen0", "frozen1", ... and stay active in the forward pass."""
    from peft import PeftModel, get_peft_model

    if not adapters:
        if stage.base != "model":
            say(f"chaining merge: {stage.base}'s adapter is merged into its base; a new adapter trains on it")
        return get_peft_model(model, lora), []
    trained = adapters[-1] if chaining == "continue" else None
    frozen = adapters[:-1] if chaining == "continue" else adapters
    names = [f"frozen{i}" for i in range(len(frozen))]
    for i, (name, folder) in enumerate(zip(names, frozen)):
        if i == 0:
            model = PeftModel.from_pretrained(model, str(folder), adapter_name=name, is_trainable=False)
        else:
            model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
    if trained is not None:
        if frozen:
            model.load_adapter(str(trained), adapter_name="default", is_trainable=True)
        else:
            model = PeftModel.from_pretrained(model, str(trained), adapter_name="default", is_trainable=True)
        say(f"chaining continue: keeps training {stage.base}'s adapter ({trained}); its LoRA settings apply, "
            "not this stage's")
    else:
        model.add_adapter("default", lora)
        say(f"chaining stack: a new adapter trains on top of {stage.base}'s adapter, which stays frozen")
    model.base_model.set_adapter([*names, "default"])
    for name, parameter in model.named_parameters():
        parameter.requires_grad = ".default." in name and "lora_" in name
    return model, list(frozen)


def point_adapter_at(folder: Path, base: Path) -> None:
    """Set the adapter's base_model_name_or_path (what PeftModel.from_pretrained loads it on)."""
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str(base)
    config_path.write_text(json.dumps(config, indent=2))


def stop_at_turn_end(model, tokenizer) -> None:
    """After SFT the model ends each answer with <|im_end|>: generation stops there (and at
    <|endoftext|>), as Qwen's chat models do."""
    from qwen_recipes.architectures import END_OF_TEXT, TURN_END

    ids = [i for i in (special_id(tokenizer, TURN_END), special_id(tokenizer, END_OF_TEXT)) if i is not None]
    if ids and model.generation_config is not None:
        model.generation_config.eos_token_id = ids
        model.generation_config.pad_token_id = special_id(tokenizer, END_OF_TEXT) or ids[-1]


def save_adapter(model, tokenizer, folder: Path) -> None:
    model.save_pretrained(str(folder), selected_adapters=["default"])
    tokenizer.save_pretrained(str(folder))


def save_merged(model, tokenizer, folder: Path) -> None:
    model.config.use_cache = True
    model.save_pretrained(str(folder), max_shard_size="5GB")
    tokenizer.save_pretrained(str(folder))
