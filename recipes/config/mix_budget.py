"""How many tokens each source of a weighted stage gives per epoch, and which sources are repeated too
often. One epoch is one pass over the stage's main source (``main = true``, else the largest weight);
every other source gets its weight's share of the budget that pass makes (``recipes.data.mixing``
draws the examples). Pure Python: validate, plan and the run share it.

Repeating data beyond about four passes stops helping (Muennighoff et al., "Scaling Data-Constrained
Language Models", 2023): ``REPEAT_LIMIT`` is where validate, plan and the run warn.
"""

from __future__ import annotations

# passes over one source, epochs included, beyond which the stage warns (see the module's docstring)
REPEAT_LIMIT = 4.0


def main_source(weights: list[float | None], mains: list[bool | None] | None = None) -> int | None:
    """The index of a weighted stage's main source: the one marked main, else the largest weight (the
    first of equals); None without weights."""
    if not weights or any(w is None for w in weights):
        return None
    marked = [i for i, m in enumerate(mains or []) if m]
    return marked[0] if marked else max(range(len(weights)), key=lambda i: (weights[i], -i))


def targets(tokens: list[int], weights: list[float | None], mains: list[bool | None] | None = None) -> list[int]:
    """Each source's training tokens per epoch: its share of a budget that holds one pass over the main
    source (see the module's docstring); without weights, every source's own tokens."""
    main = main_source(weights, mains)
    if main is None:
        return list(tokens)
    norm = float(sum(weights))
    budget = tokens[main] * norm / weights[main]
    return [tokens[main] if i == main else round(budget * w / norm) for i, w in enumerate(weights)]


def repeats(tokens: list[int], weights: list[float | None], mains: list[bool | None] | None = None) -> list[float]:
    """Passes over each source per epoch (tokens given / tokens held)."""
    return [t / have if have else 0.0 for t, have in zip(targets(tokens, weights, mains), tokens)]


def repeat_warnings(names: list[str], passes: list[float], epochs: float) -> list[str]:
    """One line per source seen more than ``REPEAT_LIMIT`` times over the stage (``passes`` per epoch)."""
    return [f"source {name!r} is seen {p * epochs:.1f} times over the stage ({p:.2f} passes per epoch x "
            f"{epochs:g} epoch(s)); beyond about {REPEAT_LIMIT:g} repeated data stops helping: give it a smaller "
            "weight, the main source more data, or fewer epochs"
            for name, p in zip(names, passes) if p * epochs > REPEAT_LIMIT]
