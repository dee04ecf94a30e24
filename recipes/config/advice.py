"""Warnings on a recipe that passed the checks: legal settings that are likely mistakes (a warmup
longer than the stage, a source repeated many times, a demo's learning rate on a 7B model, an SFT
stage that skips the pre-training result). ``recipes validate --strict`` makes them errors. No torch.
"""

from __future__ import annotations

import math

from recipes.config.collector import Collector
from recipes.config.counting import BYTES_PER_TOKEN, count_all
from recipes.config.loaded import LoadedRecipe
from recipes.config.schema import MODEL_REF, Recipe


def setting_path(recipe: Recipe, index: int, key: str) -> tuple:
    """Where a stage's value for ``key`` was set: the stage, else [defaults], else (seed plan) the
    stage itself."""
    if getattr(recipe.stages[index], key) is not None:
        return ("stages", index, key)
    if getattr(recipe.defaults, key) is not None:
        return ("defaults", key)
    return ("stages", index, "name")


def advise(loaded: LoadedRecipe, problems: Collector) -> None:
    """Warnings: legal settings that are likely mistakes."""
    recipe, info = loaded.recipe, loaded.model
    settings = [stage.settings(recipe.defaults) for stage in recipe.stages]
    by_name = {stage.name: i for i, stage in enumerate(recipe.stages)}
    for index, (stage, s) in enumerate(zip(recipe.stages, settings)):
        where = ("stages", index)
        if s.precision == "fp16" and info is not None and info.dtype == "bfloat16":
            problems.warn(setting_path(recipe, index, "precision"), "fp16 with a model whose weights are "
                          "bf16: values beyond fp16's range overflow to inf; use bf16 (or auto)")
        for scope in (stage, recipe.defaults):
            if scope.warmup_steps is not None and scope.warmup_ratio is not None:
                at = where if scope is stage else ("defaults",)
                problems.warn(at + ("warmup_ratio",), "both warmup_steps and warmup_ratio are set; "
                              "warmup_steps wins, warmup_ratio is ignored: remove one")
        if stage.max_steps is not None and stage.num_train_epochs is not None:
            problems.warn(where + ("num_train_epochs",), "max_steps is set, so num_train_epochs is ignored")
        steps = s.max_steps or _estimated_steps(loaded, index, s)
        if s.warmup_steps and steps and s.warmup_steps >= steps:
            problems.warn(setting_path(recipe, index, "warmup_steps"), f"warmup_steps {s.warmup_steps} is "
                          f"not shorter than the stage ({steps} steps{'' if s.max_steps else ', estimated'}): "
                          "the learning rate never reaches its peak")
        _advise_repeats(loaded, index, s, problems)
        _advise_lora_rate(loaded, index, s, problems)
        base = recipe.base_of(index)
        if stage.kind == "sft" and base in by_name:
            parent = by_name[base]
            if recipe.stages[parent].kind == "pretrain" and s.learning_rate > settings[parent].learning_rate:
                problems.warn(setting_path(recipe, index, "learning_rate"), f"SFT learning rate "
                              f"{s.learning_rate:g} is above the pre-training one ({settings[parent].learning_rate:g}"
                              f" in {base!r}): SFT usually takes half or less, to keep what stage 1 taught")
        if stage.kind == "sft" and base == MODEL_REF and any(s.kind == "pretrain" for s in recipe.stages[:index]):
            problems.warn(where + ("base",) if stage.base else where + ("name",), "this SFT stage starts from "
                          "the model, so the earlier pre-training stage's result is not used; set base to it")


def _estimated_steps(loaded: LoadedRecipe, index: int, s: dict) -> int | None:
    """Optimizer steps of an SFT stage from its record count (one sequence per record)."""
    if loaded.recipe.stages[index].kind != "sft":
        return None
    files = [f for (i, group, _), found in loaded.sources.items() if i == index and group == "data"
             for f in found.files]
    records = count_all(files)
    if not records:
        return None
    batch = s.per_device_train_batch_size * s.gradient_accumulation_steps
    return max(1, math.ceil(records / batch * s.num_train_epochs))


def _advise_repeats(loaded: LoadedRecipe, index: int, s, problems: Collector) -> None:
    """A weighted source seen more than four times over the stage (its tokens estimated from its files'
    size; recipes.config.mix_budget has the rule). With max_steps the epochs are not known here: `recipes
    plan` says it."""
    from recipes.config.mix_budget import repeat_warnings, repeats

    stage = loaded.recipe.stages[index]
    if s.max_steps or len(stage.data) < 2 or any(source.weight is None for source in stage.data):
        return
    sizes = []
    for j, source in enumerate(stage.data):
        resolved = loaded.sources.get((index, "data", j))
        if resolved is None:
            return
        size = sum(f.stat().st_size for f in resolved.files if f.is_file())
        records = count_all(resolved.files)
        if source.max_samples and records:
            size = size * min(1.0, source.max_samples / records)
        if source.max_tokens:
            size = min(size, source.max_tokens * BYTES_PER_TOKEN)
        sizes.append(size)
    passes = repeats(sizes, [source.weight for source in stage.data], [source.main for source in stage.data])
    for j, (source, per_epoch) in enumerate(zip(stage.data, passes)):
        for line in repeat_warnings([source.default_name()], [per_epoch], s.num_train_epochs):
            problems.warn(("stages", index, "data", j, "weight"), line + " (estimated from the files' size)")


# A LoRA learning rate above this with a model above LARGE_MODEL parameters is likely a small demo's
# rate copied into a real recipe: large models diverge at rates a 0.5B one tolerates.
LORA_RATE_LIMIT = 1e-3
LARGE_MODEL = 1_000_000_000


def _advise_lora_rate(loaded: LoadedRecipe, index: int, s, problems: Collector) -> None:
    if s.learning_rate <= LORA_RATE_LIMIT or loaded.model is None:
        return
    from recipes.family import family

    try:
        parameters = family().shape_of(loaded.model.config).total_parameters
    except (ValueError, KeyError, TypeError):
        return
    if parameters > LARGE_MODEL:
        problems.warn(setting_path(loaded.recipe, index, "learning_rate"), f"learning rate {s.learning_rate:g} "
                      f"with a model of {parameters / 1e9:.1f}B parameters: LoRA on a model this size usually "
                      "trains at 1e-4 to 2e-4 (a rate above 1e-3 is a small demo's); lower it")
