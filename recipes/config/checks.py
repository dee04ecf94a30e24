"""Checks across fields, against the loaded plugins and against the model's config.json, on a recipe
that passed the pydantic models. Errors are what cannot run; warnings are legal settings that are
likely wrong (``recipes validate --strict`` makes them errors). No torch, no transformers.
"""

from __future__ import annotations

from pathlib import Path



from recipes.config.advice import advise, setting_path
from recipes.config.cleaning import check_cleaning
from recipes.config.collector import Collector
from recipes.config.plugin_options import check_options
from recipes.config.quantization_checks import check_quantization, check_sharding
from recipes.config.counting import BYTES_PER_TOKEN, count_all
from recipes.config.loaded import (BUNDLED_PREFIX, SOURCE_GROUPS, LoadedRecipe, ResolvedSource, match_files,
                          resolve_data_path)
from recipes.config.model_info import is_hub_id, local_model_folder, model_info
from recipes.config.optimizers import check_optimizer
from recipes.config.sources import check_sources, held_count
from recipes.plugins.registry import Registry
from recipes.config.schema import FSDP2_RESHARD_AFTER_FORWARD, MODEL_REF, Recipe, did_you_mean


# Formats and stage kinds that a plugin package shipped with recipes (plugins/) provides, for an install hint
PLUGIN_PACKAGES = {"dolly": "recipes-dolly-format", "qa_markdown": "recipes-qa-markdown",
                   "documents": "recipes-documents",
                   **dict.fromkeys(("preference", "sharegpt_preference", "alpaca_preference", "kto", "sharegpt_kto",
                                    "alpaca_kto"), "recipes-trl")}
KIND_PACKAGES = {"dpo": "recipes-trl", "kto": "recipes-trl"}


def _install_hint(name: str, packages: dict, known: list[str]) -> str:
    package = packages.get(name)
    return (f"the plugin package {package} provides it: pip install -e plugins/{package}" if package
            else did_you_mean(name, known))
# Callbacks (trackers) that a plugin package shipped with recipes provides
CALLBACK_PACKAGES = {"mlflow": "recipes-mlflow", "wandb": "recipes-wandb", "swanlab": "recipes-swanlab"}


def check(loaded: LoadedRecipe, registry: Registry, problems: Collector) -> None:
    recipe = loaded.recipe
    base_dir = loaded.path.resolve().parent
    _check_model(loaded, base_dir, problems)
    _check_plugins(recipe, registry, problems)
    _check_stages(loaded, registry, base_dir, problems)
    check_sources(recipe, problems)
    check_cleaning(loaded, registry, problems)
    _check_distributed(recipe, problems)
    _check_attention(recipe, problems)
    _check_val_size(loaded, problems)
    from recipes.benchmarks.checks import check_benchmarks

    check_benchmarks(loaded, registry, problems)
    if loaded.model is not None:
        _check_against_model(loaded, problems)
    advise(loaded, problems)


def _check_model(loaded: LoadedRecipe, base_dir: Path, problems: Collector) -> None:
    model = loaded.recipe.model
    if model.path.startswith(BUNDLED_PREFIX):
        from recipes.family import family

        name, bundled = model.path[len(BUNDLED_PREFIX):], family().bundled_models
        if name not in bundled:
            problems.add(("model", "path"), f"unknown bundled model {name!r}; "
                         f"{did_you_mean(name, sorted(bundled))}")
            return
    folder = local_model_folder(model.path, base_dir)
    if folder is not None and not (folder / "config.json").is_file():
        problems.add(("model", "path"), f"{folder} is not a model folder (no config.json); give a "
                     "local HF model folder or a hub id")
        return
    loaded.model = model_info(model.path, model.revision, base_dir)
    if folder is None and loaded.model is None and not model.path.startswith(BUNDLED_PREFIX) \
            and not is_hub_id(model.path):
        problems.warn(("model", "path"), f"{model.path!r} is neither a folder (none at {base_dir / model.path}) "
                      "nor a hub id (org/name): give the model's local folder (relative to the recipe) or its "
                      "hub id, e.g. \"Qwen/Qwen2.5-7B\"")
    if loaded.model is not None and loaded.model.model_type == "qwen" and model.trust_remote_code:
        problems.add(("model", "trust_remote_code"), "Qwen v1's own code is not run: on transformers 5 it "
                     "silently re-randomises attn.c_proj when loading and lets packed examples attend to each "
                     "other. Remove trust_remote_code: the run converts the checkpoint once to a native Qwen2 "
                     "model (exact), or run `recipes convert SRC --to DIR` and set model.path to DIR")


def _check_plugins(recipe: Recipe, registry: Registry, problems: Collector) -> None:
    check_quantization(recipe, registry, problems)
    for index, name in enumerate(recipe.callbacks or []):
        if name not in registry.callbacks:
            package = CALLBACK_PACKAGES.get(name)
            hint = (f"the plugin package {package} provides it: pip install -e plugins/{package}" if package
                    else did_you_mean(name, sorted(registry.callbacks)))
            problems.add(("callbacks", index), f"unknown callback {name!r}; {hint}")


def _check_stages(loaded: LoadedRecipe, registry: Registry, base_dir: Path, problems: Collector) -> None:
    recipe = loaded.recipe
    seen: list[str] = []
    for index, stage in enumerate(recipe.stages):
        where = ("stages", index)
        if stage.name in seen:
            problems.add(where + ("name",), f"stage name {stage.name!r} is used twice; give each stage its own name")
        if stage.base is not None and stage.base != MODEL_REF and stage.base not in seen:
            later = [s.name for s in recipe.stages[index + 1:]]
            if stage.base == stage.name:
                hint = "a stage cannot start from itself; name an earlier stage or \"model\""
            elif stage.base in later:
                hint = "it comes later in the plan; a stage can only start from an earlier one"
            else:
                hint = did_you_mean(stage.base, [MODEL_REF, *seen])
            problems.add(where + ("base",), f"base {stage.base!r} is not an earlier stage: {hint}")
        seen.append(stage.name)
        kind = registry.kinds.get(stage.kind)
        if kind is None:
            problems.add(where + ("kind",), f"unknown stage kind {stage.kind!r}; "
                         + _install_hint(stage.kind, KIND_PACKAGES, sorted(registry.kinds)))
        else:
            stage._kind_defaults = dict(kind.defaults)  # the seed settings every later stage.settings() starts from
            check_options(kind.options_model, stage.kind_options, where + ("kind_options",), problems)
            _check_kind_settings(kind, recipe, index, problems)
            base = recipe.base_of(index)
            parent = next((s for s in recipe.stages[:index] if s.name == base), None)
            if kind.follows and parent is not None and parent.kind not in kind.follows:
                problems.warn(where + ("base",) if stage.base else where + ("kind",), f"this {stage.kind} stage "
                              f"starts from {parent.kind} stage {base!r}; a {stage.kind} stage is meant to follow "
                              + " or ".join(repr(k) for k in kind.follows) + "; check base")
        wanted = kind.records if kind is not None else None
        for group in SOURCE_GROUPS:
            for source_index, source in enumerate(getattr(stage, group)):
                at = where + (group, source_index)
                resolved = _resolve_source(source, base_dir, at, problems, registry)
                if resolved is None:
                    continue
                loaded.sources[(index, group, source_index)] = resolved
                fmt = registry.formats.get(resolved.format)
                if fmt is None:
                    problems.add(at + ("format",), unknown_format(resolved.format, registry))
                    continue
                if group == "eval_data" and fmt.yields not in ("documents", "conversations"):
                    problems.add(at + ("format",), f"format {resolved.format!r} gives {fmt.yields}; eval_data sets "
                                 "are evaluated as text (perplexity): give documents or conversations")
                if wanted is not None and fmt.yields != wanted and group == "data":
                    problems.add(at + ("format",) if source.format else at + ("dataset",), f"format "
                                 f"{resolved.format!r} gives {fmt.yields}, but a {stage.kind} stage trains on "
                                 f"{wanted}; pick a format that gives {wanted}")
                check_options(fmt.options_model, resolved.options, at + ("options",), problems)
        settings = stage.settings(recipe.defaults)
        loss = settings.loss
        if loss not in registry.losses:
            problems.add(setting_path(recipe, index, "loss"), f"unknown loss {loss!r}; "
                         f"{did_you_mean(loss, sorted(registry.losses))}")
        else:
            check_options(registry.losses[loss].options_model, settings.loss_options,
                          setting_path(recipe, index, "loss_options"), problems)
        message = check_optimizer(settings.optim)
        if message:
            problems.add(setting_path(recipe, index, "optim"), message)
        if settings.lr_scheduler_type == "cosine_with_min_lr":  # transformers raises when the Trainer builds it
            problems.add(setting_path(recipe, index, "lr_scheduler_type"), "cosine_with_min_lr needs min_lr or "
                         "min_lr_rate, which a recipe cannot pass to the scheduler: use \"cosine\" (it decays to 0)")
        if stage.chaining is not None and (stage.base == MODEL_REF or (stage.base is None and index == 0)):
            problems.add(where + ("chaining",), "chaining says how a stage starts from an earlier stage; this one "
                         "starts from the model: remove it")
        if stage.kind == "pretrain" and stage.packing:
            problems.add(where + ("packing",), "packing is for SFT stages: pre-training already joins documents "
                         "into full blocks; remove it")


def _check_kind_settings(kind, recipe: Recipe, index: int, problems: Collector) -> None:
    """The settings a stage kind cannot run with (``StageKind.check``), at the setting's line."""
    if kind.check is None:
        return
    try:
        options = kind.options_model.model_validate(recipe.stages[index].kind_options)
    except ValidationError:
        return  # reported with the options
    for key, message in kind.check(recipe.stages[index].settings(recipe.defaults), options) or []:
        problems.add(setting_path(recipe, index, key), message)


def unknown_format(name: str, registry: Registry) -> str:
    """The message for a data format no plugin provides (with an install hint for ours)."""
    return f"unknown data format {name!r}; " + _install_hint(name, PLUGIN_PACKAGES, sorted(registry.formats))


def check_raw_formats(data: dict, registry: Registry, problems: Collector) -> None:
    """Unknown data formats in a recipe that could not be built (a required key missing), so that they
    are reported in the same pass as its schema errors."""
    stages = data.get("stages")
    for index, stage in enumerate(stages if isinstance(stages, list) else []):
        for group in SOURCE_GROUPS:
            sources = stage.get(group) if isinstance(stage, dict) else None
            for j, source in enumerate(sources if isinstance(sources, list) else []):
                name = source.get("format") if isinstance(source, dict) else None
                if isinstance(name, str) and name not in registry.formats:
                    problems.add(("stages", index, group, j, "format"), unknown_format(name, registry))


def _resolve_source(source, base_dir: Path, at: tuple, problems: Collector,
                    registry: Registry) -> ResolvedSource | None:
    """Files, format and options of a data source: given in the recipe, or by a dataset_info entry."""
    if source.dataset_info is not None:
        from recipes.config.dataset_info import resolve_dataset
        from recipes.errors import RecipeError

        try:
            found = resolve_dataset(Path(resolve_data_path(source.dataset_info, base_dir)), source.dataset)
        except RecipeError as exc:
            for problem in exc.problems:
                problems.add(at + ("dataset",), str(problem))
            return None
        return ResolvedSource(found.format_name, {**found.options, **source.options}, found.files)
    pattern = resolve_data_path(source.path, base_dir)
    fmt = registry.formats.get(source.format)
    suffixes = fmt.suffixes if fmt is not None else ()
    files = match_files(pattern, suffixes)
    if not files:
        others = match_files(pattern) if suffixes else []
        if others:
            found = sorted({p.suffix.lower() or "no suffix" for p in others})
            problems.add(at + ("path",), f"{source.path!r} holds no file that format {source.format!r} reads "
                         f"({', '.join(suffixes)}); it has {len(others)} other file{'s' * (len(others) > 1)} "
                         f"({', '.join(found[:8])}): point path at the documents, or pick another format")
        else:
            problems.add(at + ("path",), f"{source.path!r} matches no file (looked for {pattern})")
    return ResolvedSource(source.format, dict(source.options), files)


def _check_distributed(recipe: Recipe, problems: Collector) -> None:
    """Strategy settings that the libraries cannot run, refused with the reason."""
    import importlib.util

    d, where = recipe.distributed, ("distributed",)
    if d.fsdp_sharding is not None and d.strategy != "fsdp":
        problems.add(where + ("fsdp_sharding",), f"fsdp_sharding applies to strategy \"fsdp\", not {d.strategy!r}")
    if d.strategy == "fsdp" and d.fsdp_sharding is not None and d.fsdp_sharding not in FSDP2_RESHARD_AFTER_FORWARD:
        problems.add(where + ("fsdp_sharding",), f"fsdp_sharding {d.fsdp_sharding!r} is FSDP1's, and transformers 5 "
                     "trains FSDP2, which has no such mode: use \"full_shard\" (shard within and across nodes) "
                     "or \"shard_grad_op\"")
    if d.zero_stage is not None and d.strategy != "deepspeed":
        problems.add(where + ("zero_stage",), f"zero_stage applies to strategy \"deepspeed\", not {d.strategy!r}")
    if d.strategy == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        # a warning: the recipe may run on another machine
        problems.warn(where + ("strategy",), "strategy \"deepspeed\" needs the deepspeed package, not "
                      "installed here: pip install deepspeed on the machine that runs it")
    check_sharding(recipe, problems)
    _check_sharded_head(recipe, problems)


def _check_sharded_head(recipe: Recipe, problems: Collector) -> None:
    """The chunked loss reads lm_head.weight after the model's forward and sends its gradient through
    hidden states captured inside it. ZeRO-3 re-partitions the weight after the head's own
    forward, so the loss would read an empty tensor. FSDP2 (transformers 5's FSDP) frees the head's
    gathered weight after its unit's forward unless told otherwise, and runs its gradient reduce-scatter
    from backward hooks on that unit's outputs, the logits, which the chunked loss bypasses (it takes the
    hidden states from inside the forward and computes the logits itself); whether accelerate's separate
    unit for the head keeps both working has not been run on GPUs. Both are refused with the reason;
    loss = "standard" works."""
    d = recipe.distributed
    zero3 = d.strategy == "deepspeed" and (d.zero_stage or 2) == 3
    if not (zero3 or d.strategy == "fsdp"):
        return
    for index, stage in enumerate(recipe.stages):
        if stage.settings(recipe.defaults).loss != "chunked":
            continue
        why = ("ZeRO-3 partitions lm_head.weight outside its forward, so the chunked loss would read an empty "
               "weight" if zero3 else "FSDP2 gathers lm_head.weight and reduces its gradient around the head's own "
               "forward and outputs, which the chunked loss bypasses (it computes the logits itself, from "
               "the hidden states)")
        problems.add(setting_path(recipe, index, "loss"), f"loss \"chunked\" with strategy \"{d.strategy}\": "
                     f"{why}; set loss = \"standard\" (or use " + ("zero_stage = 2)" if zero3 else "strategy \"ddp\")"))


def _check_attention(recipe: Recipe, problems: Collector) -> None:
    """flash_attention_2 asked for but flash-attn not installed here: a warning (it may run elsewhere);
    with precision fp32: refused (flash attention has no fp32 kernel; the first forward would fail)."""
    import importlib.util

    for index, stage in enumerate(recipe.stages):
        settings = stage.settings(recipe.defaults)
        if settings.attn_implementation == "flash_attention_2" and settings.precision == "fp32":
            problems.add(setting_path(recipe, index, "attn_implementation"), "flash_attention_2 has no fp32 kernel and "
                         "this stage's precision is \"fp32\": set precision = \"bf16\" (or \"auto\"), or "
                         "attn_implementation = \"sdpa\"")
        elif (settings.attn_implementation == "flash_attention_2"
                and importlib.util.find_spec("flash_attn") is None):
            problems.warn(setting_path(recipe, index, "attn_implementation"), "flash_attention_2 needs the flash-attn "
                          "package (not installed here) and a GPU: pip install flash-attn on the machine that runs it, "
                          "or use \"auto\"")


def _check_against_model(loaded: LoadedRecipe, problems: Collector) -> None:
    """cutoff_len within the model's context; LoRA targets among its linear layers."""
    from recipes.family import family

    recipe, info = loaded.recipe, loaded.model
    modules = family().linear_modules.get(info.model_type or "")
    native = family().native_config(info.config) if family().native_config else None
    if native is not None:  # trains as another architecture (Qwen v1 as native Qwen2): names translate
        aliases = family().target_aliases.get(info.model_type or "", {})
        modules = (*family().linear_modules.get(native.get("model_type"), ()), *aliases)
    for index, stage in enumerate(recipe.stages):
        settings = stage.settings(recipe.defaults)
        path = setting_path(recipe, index, "cutoff_len")
        if info.context and settings.cutoff_len > info.context:
            problems.add(path, f"cutoff_len {settings.cutoff_len} is longer than the model's context "
                         f"({info.context} in {info.source}); set at most {info.context}")
        targets = settings.lora_target
        path = setting_path(recipe, index, "lora_target")
        if modules and targets != "all":
            for name in (t for t in targets if t not in modules):
                problems.add(path, f"LoRA target {name!r} is not a linear layer of a {info.model_type} model; "
                             f"{did_you_mean(name, list(modules))} (or \"all\")")


def _check_val_size(loaded: LoadedRecipe, problems: Collector) -> None:
    """val_size must hold out at least one example of each training source and leave one to train on,
    as the data phase requires (recipes.data.layout.held_out); found here from the record counts,
    before any source is tokenized. SFT examples are records (an error); pre-training examples are
    cutoff_len blocks, estimated from the files' size (a warning)."""
    recipe = loaded.recipe
    for index, stage in enumerate(recipe.stages):
        s = stage.settings(recipe.defaults)
        if not s.val_size:
            continue
        counts = []
        for j, source in enumerate(stage.data):
            resolved = loaded.sources.get((index, "data", j))
            records = count_all(resolved.files) if resolved is not None else None
            if records is None:
                return
            if stage.kind == "pretrain":
                size = sum(f.stat().st_size for f in resolved.files if f.is_file())
                records = max(1, round(size / BYTES_PER_TOKEN / s.cutoff_len))
            counts.append(min(records, source.max_samples) if source.max_samples else records)
        for j, count in enumerate(counts):
            held = held_count(s.val_size, count, sum(counts), len(counts))
            held = int(held) if held >= 1 else round(count * held)
            if 0 < held < count:
                continue
            what = ("blocks of cutoff_len (estimated from its size)" if stage.kind == "pretrain" else "records")
            of = f" of source {stage.data[j].default_name()!r}" if len(counts) > 1 else ""
            message = (f"val_size {s.val_size:g} holds out {held} of the {count} {what}{of}: set it so that both "
                       "the training and the evaluation set keep at least one (a count of 1 or more, or a larger "
                       "share)")
            at = setting_path(recipe, index, "val_size")
            (problems.warn if stage.kind == "pretrain" else problems.add)(at, message)
