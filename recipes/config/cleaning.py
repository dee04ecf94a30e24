"""Checks of the sources' cleaning settings (``dedup``, ``near_threshold``, ``normalize``, ``script``,
``filters``) against the loaded filter plugins, each problem at its place in the recipe. No torch.

Cleaning applies to the training sources of stages the host tokenizes (pre-training and SFT): an
evaluation set is what decontamination compares against, and a stage kind with its own data
preparation (DPO) reads its records itself. A cleaning key the recipe sets where it cannot apply is
an error rather than a setting silently ignored; left to its defaults it is simply not used there.
"""

from __future__ import annotations

from pydantic import ValidationError

from recipes.config.collector import Collector
from recipes.config.loaded import LoadedRecipe
from recipes.config.plugin_options import check_options
from recipes.config.schema import did_you_mean
from recipes.plugins.registry import Registry

NEAR_DEDUP = "near_dedup"  # the filter ``dedup = "near"`` builds, with options_model(threshold=...)
NEAR_DEDUP_PACKAGE = "recipes-near-dedup"


def check_cleaning(loaded: LoadedRecipe, registry: Registry, problems: Collector) -> None:
    recipe = loaded.recipe
    for index, stage in enumerate(recipe.stages):
        kind = registry.kinds.get(stage.kind)
        own_data = kind is not None and kind.build is not None
        for group in ("data", "eval_data"):
            for j, source in enumerate(getattr(stage, group)):
                at = ("stages", index, group, j)
                given = source.cleaning_set()
                if given and (group == "eval_data" or own_data):
                    why = ("an evaluation set is kept whole (decontamination compares the training data against it)"
                           if group == "eval_data" else f"a {stage.kind} stage reads its data itself, uncleaned")
                    problems.add(at + (given[0],), f"cleaning applies to the training data of pretrain and sft "
                                 f"stages; {why}: remove {given[0]}")
                    continue
                if group == "data" and not own_data:
                    _check_source(loaded, registry, source, at, problems)


def _check_source(loaded: LoadedRecipe, registry: Registry, source, at: tuple, problems: Collector) -> None:
    if source.dedup == "near":
        near = registry.filters.get(NEAR_DEDUP)
        if near is None:
            problems.add(at + ("dedup",), f"dedup = \"near\" needs the {NEAR_DEDUP} filter, which the plugin package "
                         f"{NEAR_DEDUP_PACKAGE} provides: pip install -e plugins/{NEAR_DEDUP_PACKAGE} (or use "
                         "dedup = \"exact\")")
        else:
            try:
                near.options_model(threshold=source.near_threshold)
            except ValidationError as exc:
                problems.add(at + ("near_threshold",), f"the {NEAR_DEDUP} filter refuses it: "
                             f"{exc.errors()[0]['msg']}")
        table = source.filters.get(NEAR_DEDUP)
        if isinstance(table, dict) and "threshold" in table:  # near_threshold would silently win
            problems.add(at + ("filters", NEAR_DEDUP, "threshold"), "with dedup = \"near\" the threshold is the "
                         "source's near_threshold: set near_threshold instead")
    elif "near_threshold" in source.model_fields_set:
        problems.add(at + ("near_threshold",), "near_threshold applies to dedup = \"near\": remove it, or set dedup")
    resolved = loaded.sources.get((at[1], "data", at[3]))
    fmt = registry.formats.get(resolved.format) if resolved is not None else None
    if source.normalize == "text" and fmt is not None and fmt.yields != "documents":
        problems.add(at + ("normalize",), "normalize = \"text\" rewrites documents; a conversation is trained as "
                     "written (its checks still see the normalised text): use \"checks\"")
    for name, options in source.filters.items():
        where = at + ("filters", name)
        provider = registry.filters.get(name)
        if provider is None:
            problems.add(where, f"unknown filter {name!r}; {did_you_mean(name, sorted(registry.filters))}")
            continue
        if options is False:
            continue
        check_options(provider.options_model, {} if options is True else options, where, problems)
        if name == "script" and source.script is None:  # the built-in needs to know what to expect
            problems.add(where, "the script filter keeps documents written mostly in the source's script: set "
                         "script = \"cjk\" or \"latin\" on this source")
