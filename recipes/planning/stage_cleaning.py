"""A stage's training sources as a cleaning tool outside ``recipes prepare`` needs them: each source's
files, its format and the format's options, its cleaning (the settings and checks ``recipes prepare``
applies to it) and its part of the mix; with the stage's bad-record policy. Plain data and plugin
providers: it pickles, so a pipeline running in other processes or on other machines can carry it.
No torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from recipes.errors import RecipeError


@dataclass(frozen=True)
class CleaningSource:
    name: str
    format: Any  # DataFormat
    options: Any  # the format's options model, validated
    files: tuple[str, ...]
    cleaning: Any  # recipes.data.cleaning.Cleaning: dedup, near_threshold, normalize, script, filters, checks
    # (its checks: the stage's built-in document checks, decontamination among them)
    mix: dict  # what of the mix the recipe set: weight, main, max_samples, max_tokens
    corpus_filters: tuple[str, ...] = ()  # the filters it names whose scope is "corpus" (stateful, one process)


@dataclass(frozen=True)
class StageCleaning:
    recipe: str  # the recipe file
    name: str  # the stage
    records: str  # what the stage's formats yield ("documents" for pretrain)
    sources: tuple[CleaningSource, ...]
    on_bad_record: str
    max_bad_records: float


def stage_cleaning(recipe: str, stage: str, near_dedup=None) -> StageCleaning:
    """The training sources of ``stage`` of ``recipe`` (a file or a bundled name), validated.
    ``near_dedup``: a ``DocumentFilter`` standing in for the ``near_dedup`` filter when no plugin
    provides one (a caller that removes near duplicates itself: its ``options_model`` validates
    ``near_threshold`` and a ``filters.near_dedup`` table; its ``make`` is never called here)."""
    from recipes.config.cleaning import NEAR_DEDUP
    from recipes.config.load import load_recipe
    from recipes.data.cleaning import stage_cleaning as cleanings_of
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry

    registry = get_registry()
    if near_dedup is not None and NEAR_DEDUP not in registry.filters:
        registry = replace(registry, filters={**registry.filters, NEAR_DEDUP: near_dedup})
    loaded = load_recipe(recipe, registry)
    planned = make_plan(loaded, registry).selected(stage)[0]
    cleanings = cleanings_of(planned)  # with the stage's built-in checks, as prepare gets them
    sources = tuple(CleaningSource(source.name, source.format, source.options, tuple(str(f) for f in source.files),
                                   cleaning, source.mix_json(), _corpus_filters(cleaning, registry))
                    for source, cleaning in zip(planned.sources, cleanings))
    if not sources:
        raise RecipeError(f"stage {stage!r}: no training source to clean")
    s = planned.settings
    return StageCleaning(str(Path(loaded.path).resolve()), planned.name, planned.records, sources,
                         s.on_bad_record, s.max_bad_records)


def _corpus_filters(cleaning, registry) -> tuple[str, ...]:
    """Besides a ``near_dedup`` table, which only gives ``dedup = "near"`` its options."""
    from recipes.config.cleaning import NEAR_DEDUP
    from recipes.plugins.filters import CORPUS

    return tuple(name for name, _ in cleaning.filters if registry.filters[name].scope == CORPUS
                 and not (name == NEAR_DEDUP and cleaning.dedup == "near"))
