"""What each stage of a recipe will cost, before anything runs: parameters (total, trainable, their
share, the layers LoRA wraps), memory per GPU (recipes.planning.memory) and, where the data is at hand,
tokens per epoch, optimizer steps and warmup steps. This is `recipes plan`.

Parameters come from config.json shapes (qwen_recipes.shapes), so no torch and no weights are
needed. Tokens come from one of two places:

- by default an estimate from the data's UTF-8 size (``BYTES_PER_TOKEN``, measured with the Qwen
  tokenizer on the bundled samples, English and Chinese), plus ChatML's tokens per message for SFT;
- with ``tokenize=True``, the stage's own tokenizer and data code (recipes.data.tokenization), which gives the
  exact sequence counts a run will see; it imports transformers and needs the tokenizer at hand.
"""

from __future__ import annotations

import functools
import math

from recipes.errors import RecipeError
from recipes.config.counting import BYTES_PER_TOKEN
from recipes.config.loaded import LoadedRecipe
from recipes.config.mix_budget import repeat_warnings, targets
from recipes.config.quantization_checks import quant_words
from recipes.planning.memory import adapter_parameters, estimate_memory, shard
from recipes.planning.plan import Plan, StagePlan

# ChatML wraps each message in <|im_start|>role\n ... <|im_end|>\n: 5 tokens around its text.
CHATML_TOKENS_PER_MESSAGE = 5
# Qwen2.5's template adds its default system message when a conversation has none (measured: 21
# tokens with its ChatML wrapping).
DEFAULT_SYSTEM_TOKENS = 21


def recipe_estimate(loaded: LoadedRecipe, plan: Plan, device: str = "cuda", tokenize: bool = False,
                    processes: int = 1) -> dict:
    """The whole recipe's estimate as plain data (what ``recipes plan --json`` prints)."""
    from recipes.family import family

    info = loaded.model
    if info is None:
        raise RecipeError(f"{loaded.path}: model.path: the config.json of {loaded.recipe.model.path!r} is not at "
                          "hand (not a local folder, not in the HF cache, not a shipped config); download it "
                          "(`hf download REPO config.json`) or give a local folder")
    try:
        shape = v1_shape = family().shape_of(info.config)
        native = family().native_config(info.config) if family().native_config else None
        if native is not None:  # issue 17: v1 trains as its native Qwen2 conversion
            shape = family().shape_of(native)
    except (ValueError, KeyError) as exc:
        raise RecipeError(f"{loaded.path}: model.path: cannot plan a model whose config ({info.source}) "
                          f"{'lacks ' + repr(exc.args[0]) if isinstance(exc, KeyError) else 'has ' + str(exc)}") from None
    quantization = loaded.recipe.quantization
    quant = {"backend": plan.backend.name, **plan.backend_options.model_dump(mode="json")}
    tokenizer = _tokenizer(plan) if tokenize else None
    stages = []
    for stage in plan.stages:  # each with its own quantization (a stage's own, else the recipe's)
        width = stage.backend.bytes_per_weight
        width = None if width is None else functools.partial(width, stage.backend_options)  # a plugin's count
        stages.append(stage_estimate(stage, shape, stage.quantization, device, tokenizer, plan.distributed,
                                     processes, width))
        stages[-1]["quantization"] = stage.quantization
    from recipes.planning.trainable import qwen1_translation, token_rows_estimate

    for stage, entry, written in zip(plan.stages, stages, loaded.recipe.stages):
        entry["parameters"]["token_rows"] = token_rows_estimate(stage.settings, stage.kind, shape)
        if v1_shape is not shape:
            entry["parameters"]["qwen1"] = qwen1_translation(written.settings(loaded.recipe.defaults).lora_target,
                                                             stage.settings.lora_target, stage.settings.lora_rank,
                                                             v1_shape, shape)
    return {
        "name": plan.name,
        "model": {"path": loaded.recipe.model.path,
                  "model_type": shape.model_type if v1_shape is shape else "qwen (v1), trained as native qwen2", "config": info.source,
                  "total_parameters": shape.total_parameters, "layers": shape.layers, "hidden": shape.hidden,
                  "vocab": shape.vocab, "tied_embeddings": shape.tied},
        "quantization": quant if quantization is not None else {"backend": "none"},
        "device": device,
        "distributed": {**plan.distributed.model_dump(mode="json"), "processes": processes},
        "tokens_from": "tokenizer" if tokenize else f"data size ({BYTES_PER_TOKEN} bytes per token)",
        "stages": stages,
        "benchmarks": _benchmarks(plan, shape, device, stages, tokenizer),
    }


def _benchmarks(plan: Plan, shape, device: str, stages: list[dict], tokenizer) -> list[dict]:
    from recipes.benchmarks.estimate import benchmarks_estimate

    return benchmarks_estimate(plan, shape, device, stages, tokenizer)


def stage_estimate(stage: StagePlan, shape, quantization: dict, device: str, tokenizer=None,
                   distributed=None, processes: int = 1, bytes_per_weight=None) -> dict:
    s = stage.settings
    base = shape.total_parameters
    lora = adapter_parameters(shape, s)
    wrapped = shape.targeted(s.lora_target)
    through = stage.kind_provider.sequences_per_example if stage.kind_provider is not None else 1
    # a preference pair puts its chosen and its rejected answer through the model together
    counted = s if through == 1 else s.model_copy(update={
        "per_device_train_batch_size": s.per_device_train_batch_size * through,
        "per_device_eval_batch_size": (s.per_device_eval_batch_size or s.per_device_train_batch_size) * through})
    memory = estimate_memory(shape, counted, quantization, device, stage.logit_positions, bytes_per_weight)
    if distributed is not None:
        memory = shard(memory, distributed.strategy, processes, distributed.fsdp_sharding, distributed.zero_stage,
                       distributed.cpu_offload)
    return {
        "name": stage.name, "kind": stage.kind, "base": stage.base,
        "parameters": {
            "total": base + lora, "base": base, "trainable": lora,
            "trainable_share": lora / (base + lora),  # as peft counts it: LoRA in the total
            "lora_rank": s.lora_rank, "lora_target": s.lora_target,
            "lora_modules": [layer.path for layer in wrapped],
            "lora_layers": len(wrapped) * shape.layers,
        },
        "memory": {**memory.as_dict(), "batch": counted.per_device_train_batch_size, "sequences_per_example": through,
                   "cutoff_len": s.cutoff_len,
                   "eval_batch": counted.per_device_eval_batch_size or counted.per_device_train_batch_size,
                   "gradient_checkpointing": s.gradient_checkpointing, "optim": s.optim},
        "data": data_estimate(stage, tokenizer),
    }


def data_estimate(stage: StagePlan, tokenizer=None) -> dict:
    """Records, tokens per epoch, sequences, optimizer steps and warmup steps of one stage."""
    s = stage.settings
    if tokenizer is not None and not stage.language_modelling:  # the kind's own preparation, as a run does it
        from recipes.data.prepare import kind_data

        data = stage.kind_provider.prepare(kind_data(stage, tokenizer, lambda message: None))
        sequences, tokens, record_count = len(data.train), data.stats.get("tokens", 0), data.stats.get("records", 0)
        # the kind reads its sources together: one entry for them all
        sources = [{"name": "+".join(source.name for source in stage.sources), "weight": None, "tokens": tokens,
                    "sampled_tokens": tokens, "share": 1.0}]
    elif tokenizer is not None:  # exactly what the stage will train on: tokenized, split, packed
        from recipes.data.prepare import prepare

        data = prepare(stage, tokenizer, lambda message: None)
        sequences, tokens, record_count = len(data.train), data.stats.tokens, data.stats.records
        sources = [{"name": m["name"], "weight": m["weight"], "tokens": m["offered_tokens"],
                    "sampled_tokens": m["tokens"], "share": m["share"]} for m in data.mix]
    else:  # issue 14: from a sample of each file (its first MBs), scaled by the file's size on disk
        from recipes.data.sample import sample_records

        record_count = tokens = 0
        sources = []
        for source in stage.sources:
            count = size = 0
            for records, scale in sample_records([source]):
                count += round(len(records) * scale)
                size += round(_tokens_from_size(records, stage.records, s.cutoff_len)[0] * scale)
            size = _capped(size, count, source, stage.records, s.cutoff_len)
            sources.append({"name": source.name, "weight": source.weight, "tokens": size, "records": count})
            record_count, tokens = record_count + count, tokens + size
        # an epoch: one pass over the main source, the others at their weight's share (recipes.config.mix_budget)
        wanted = targets([x["tokens"] for x in sources], [x["weight"] for x in sources],
                         [source.main for source in stage.sources])
        trained = sum(wanted)
        for x, given in zip(sources, wanted):
            x["share"] = given / max(trained, 1)
            x["sampled_tokens"] = given
        trained_records = sum(x["records"] * given / x["tokens"] if x["tokens"] else 0 for x, given in zip(sources, wanted))
        # tokens_per_epoch stays what the sources hold (as the tokenized count gives it); sequences and
        # steps follow what an epoch trains
        sequences = math.ceil(trained / s.cutoff_len) if stage.records == "documents" else round(trained_records)
        if s.val_size:
            held = int(s.val_size) if s.val_size >= 1 else round(sequences * s.val_size)
            sequences -= held
        if s.packing:
            train_tokens = trained * sequences / max(round(trained_records), 1)
            sequences = math.ceil(train_tokens / (s.cutoff_len * PACKING_FILL))
    batches = math.ceil(sequences / s.per_device_train_batch_size)
    per_epoch = max(math.ceil(batches / s.gradient_accumulation_steps), 1)  # as the HF Trainer counts
    steps = s.max_steps or math.ceil(s.num_train_epochs * per_epoch)
    warmup = s.warmup_steps if s.warmup_steps is not None else math.ceil(steps * s.warmup_ratio)
    epochs = s.max_steps / per_epoch if s.max_steps else s.num_train_epochs
    notes = repeat_warnings([x["name"] for x in sources], [x["sampled_tokens"] / x["tokens"] if x["tokens"] else 0.0
                                                          for x in sources], epochs)
    if s.max_steps and s.max_steps < 0.01 * per_epoch:
        notes.append(f"max_steps {s.max_steps} is {s.max_steps / per_epoch:.2%} of an epoch ({per_epoch:,} steps): "
                     "the stage sees under 1% of its data; raise max_steps or leave it out to train by epochs")
    return {"records": record_count, "tokens_per_epoch": tokens, "sequences": sequences,
            "steps_per_epoch": per_epoch, "optimizer_steps": steps, "warmup_steps": warmup,
            "exact": tokenizer is not None, "sources": sources, "notes": notes}


def _capped(tokens: int, records: int, source, kind: str, cutoff_len: int) -> int:
    """A source's tokens under its ``max_tokens`` and ``max_samples`` (documents: blocks)."""
    if source.max_samples is not None:
        per = cutoff_len if kind == "documents" else tokens / max(records, 1)
        tokens = min(tokens, round(source.max_samples * per))
    return min(tokens, source.max_tokens) if source.max_tokens is not None else tokens


# the share of a packed row's slots that real tokens fill (measured: 92% on the bundled SFT sample
# at cutoff 256, more at longer cutoffs)
PACKING_FILL = 0.92


def _text_bytes(value) -> int:
    """The UTF-8 size of every string in a record (a stage kind's own records: whatever their shape)."""
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, dict):
        return sum(_text_bytes(v) for k, v in value.items() if not str(k).startswith("_"))
    if isinstance(value, (list, tuple)):
        return sum(_text_bytes(v) for v in value)
    return 0


def _tokens_from_size(records: list[dict], kind: str, cutoff_len: int) -> tuple[int, int]:
    """(tokens, sequences) of records that yield ``kind`` (documents, conversations or a stage kind's own)."""
    if kind not in ("documents", "conversations"):
        return sum(round(_text_bytes(r) / BYTES_PER_TOKEN) for r in records), len(records)
    if kind == "documents":
        size = sum(len(r["text"].encode("utf-8")) for r in records)
        tokens = round(size / BYTES_PER_TOKEN) + len(records)  # + one <|endoftext|> per document
        return tokens, math.ceil(tokens / cutoff_len)
    tokens = 0
    for record in records:
        messages = record["messages"]
        text = sum(len(m["content"].encode("utf-8")) for m in messages)
        tokens += round(text / BYTES_PER_TOKEN) + CHATML_TOKENS_PER_MESSAGE * len(messages)
        if not messages or messages[0]["role"] != "system":
            tokens += DEFAULT_SYSTEM_TOKENS
    return tokens, len(records)


def _tokenizer(plan: Plan):
    from transformers import AutoTokenizer

    from recipes.planning.resolve import resolve_model

    path = resolve_model(plan.model_path, plan.revision, None, plan.recipe_path)  # Qwen v1: the native folder
    kwargs = {"trust_remote_code": plan.trust_remote_code}
    if plan.revision:
        kwargs["revision"] = plan.revision
    return AutoTokenizer.from_pretrained(path, **kwargs)


def _size(n: int) -> str:
    return f"{n / 2**30:,.2f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def estimate_lines(estimate: dict) -> list[str]:
    """The estimate as text, for the terminal."""
    model, quant = estimate["model"], estimate["quantization"]
    where = "per GPU" if estimate["device"] == "cuda" else "CPU process growth"
    quantized = "" if quant["backend"] == "none" else ", " + quant_words(quant)
    lines = [f"model {model['path']} ({model['model_type']}, {model['total_parameters']:,} parameters, "
             f"{model['layers']} layers, hidden {model['hidden']}, vocab {model['vocab']:,}"
             f"{', tied embeddings' if model['tied_embeddings'] else ''}; config: {model['config']}){quantized}"]
    for number, stage in enumerate(estimate["stages"], start=1):
        p, m, d = stage["parameters"], stage["memory"], stage["data"]
        target = p["lora_target"] if isinstance(p["lora_target"], str) else ", ".join(p["lora_target"])
        own = stage.get("quantization", quant)
        lines.append(f"{number}. {stage['name']} ({stage['kind']}) from {stage['base']}"
                     + ("" if own == quant else f", weights {quant_words(own)}"))
        lines.append(f"   parameters: {p['trainable']:,} trainable of {p['total']:,} = {100 * p['trainable_share']:.3f}% "
                     f"(LoRA r={p['lora_rank']} on {target}: {', '.join(p['lora_modules'])}; "
                     f"{p['lora_layers']} layers)")
        from recipes.planning.trainable import extra_lines

        lines.extend(extra_lines(stage))
        pairs = f" ({m['batch'] // m['sequences_per_example']} examples x {m['sequences_per_example']} sequences)" \
            if m.get("sequences_per_example", 1) > 1 else ""
        lines.append(f"   memory {where} ({m['precision']}, batch {m['batch']}{pairs} x {m['cutoff_len']} tokens, "
                     f"optim {m['optim']}, gradient checkpointing {'on' if m['gradient_checkpointing'] else 'off'}):")
        rows = [("weights", m["weights"]), ("LoRA weights (fp32)", m["lora_weights"]),
                ("gradients", m["gradients"]), ("optimizer state", m["optimizer"]),
                ("activations", m["activations"]), ("logits and loss", m["logits_and_loss"]),
                ("overhead", m["overhead"])]
        for label, value in rows:
            lines.append(f"     {label:<22}{_size(value):>14}")
        lines.append(f"     {'total':<22}{_size(m['total']):>14}")
        lines.append(f"     {'evaluation':<22}{_size(m['evaluation']):>14}  (batch {m['eval_batch']} x {m['cutoff_len']}, "
                     f"no gradients; the stage's peak: {_size(m['peak'])})")
        other = "without" if m["gradient_checkpointing"] else "with"
        other_value = m[f"activations_{other}_checkpointing"]
        lines.append(f"     (activations {other} checkpointing: {_size(other_value)}, total "
                     f"{_size(m['total'] - m['activations'] + other_value)})")
        how = "tokenized" if d["exact"] else "estimated from data size"
        lines.append(f"   data: {d['records']:,} records, {d['tokens_per_epoch']:,} tokens per epoch ({how}), "
                     f"{d['sequences']:,} sequences; {d['optimizer_steps']:,} optimizer steps "
                     f"({d['steps_per_epoch']:,} per epoch), {d['warmup_steps']:,} warmup")
        sources = d.get("sources") or []
        if len(sources) > 1 or any(x["weight"] is not None for x in sources):
            for x in sources:
                ratio = x["sampled_tokens"] / x["tokens"] if x["tokens"] else 0
                lines.append(f"     source {x['name']}: {x['tokens']:,} tokens, {x['share']:.1%} of the training "
                             f"tokens = {x['sampled_tokens']:,} ({ratio:.2f}x its tokens"
                             + (", over-sampled)" if ratio > 1.0005 else ", under-sampled)" if ratio < 0.9995 else ")"))
        lines += [f"   note: {note}" for note in d.get("notes", [])]
    from recipes.benchmarks.estimate import benchmark_lines

    lines.extend(benchmark_lines(estimate.get("benchmarks") or [], _size))
    return lines
