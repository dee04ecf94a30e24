"""Checks of a stage's sources as a mix and as evaluation sets: names unique, weights on every
training source or none, none on evaluation data, and evaluation-set names that cannot collide (two
``test.jsonl`` in different folders; an ``eval_data`` file named ``val`` beside a held-out share).

``eval_set_names`` is the one rule for what a stage's evaluation sets are called; the data phase
names them by it. No torch.
"""

from __future__ import annotations

from recipes.config.collector import Collector
from recipes.config.schema import Recipe

HELD_OUT = "val"


def held_out_names(names: list[str]) -> list[str]:
    """The held-out sets (``val_size``) of a stage whose training sources are called ``names``: one
    source holds out ``val``; several hold out a share of each, ``val/NAME``, so that each source's
    perplexity is seen on its own."""
    return [HELD_OUT] if len(names) == 1 else [f"{HELD_OUT}/{name}" for name in names]


def held_count(val_size: float, examples: int, total: int, sources: int) -> float:
    """A source's part of ``val_size``: a share applies to each source; a count is divided among the
    sources by their size (at least one each)."""
    if val_size < 1 or sources == 1:
        return val_size
    return float(max(1, round(val_size * examples / max(total, 1))))


def eval_set_names(data_names: list[str], eval_names: list[str], val_size: float) -> list[str]:
    """Every evaluation set of a stage, in order: the held-out ones, then the ``eval_data`` sources."""
    return (held_out_names(data_names) if val_size else []) + list(eval_names)


def check_sources(recipe: Recipe, problems: Collector) -> None:
    for index, stage in enumerate(recipe.stages):
        where = ("stages", index)
        settings = stage.settings(recipe.defaults)
        _unique(stage.data, where + ("data",), "training", problems)
        _unique(stage.eval_data, where + ("eval_data",), "evaluation", problems)
        weighted = [source.weight is not None for source in stage.data]
        if any(weighted) and not all(weighted):
            missing = weighted.index(False)
            problems.add(where + ("data", missing, "path" if stage.data[missing].path else "dataset"),
                         "this source has no weight while another source of the stage has one: give every "
                         "training source a weight (its share of the tokens), or none")
        mains = [j for j, source in enumerate(stage.data) if source.main]
        for j in mains[1:]:
            problems.add(where + ("data", j, "main"), f"two main sources in this stage (this one and number "
                         f"{mains[0] + 1}): an epoch is one pass over one source; keep main = true on one")
        for j in mains[:1]:
            if not all(weighted):
                problems.add(where + ("data", j, "main"), "main says which source one epoch passes over once, "
                             "in a mix by weight: give every training source a weight, or remove main")
        for j, source in enumerate(stage.eval_data):
            if source.main is not None:
                problems.add(where + ("eval_data", j, "main"), "main applies to training sources (an epoch's "
                             "pass); an evaluation set is evaluated whole: remove it")
            if source.weight is not None:
                problems.add(where + ("eval_data", j, "weight"), "weight is a share of the training tokens; an "
                             "evaluation set is evaluated whole: remove it (max_samples caps its size)")
            if settings.val_size and len(stage.data) == 1 and source.default_name() == HELD_OUT:
                problems.add(where + ("eval_data", j, "name" if source.name else "path"),
                             f"this evaluation set is called {HELD_OUT!r}, the name of the share val_size holds "
                             f"out: give it another name (name = \"...\")")


def _unique(sources, at: tuple, what: str, problems: Collector) -> None:
    seen: dict[str, int] = {}
    for j, source in enumerate(sources):
        name = source.default_name()
        if name in seen:
            field = "name" if source.name else ("path" if source.path else "dataset")
            problems.add(at + (j, field), f"two {what} sources of this stage are called {name!r} (this one and "
                         f"number {seen[name] + 1}): give one a name (name = \"...\"), which the shares, "
                         "losses and evaluation matrix show")
        seen.setdefault(name, j)
