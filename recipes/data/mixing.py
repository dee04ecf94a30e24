"""Mixing a stage's sources: each source's share of the training tokens, seeded and reproducible.

Continued pre-training on a domain corpus alone makes a model forget; the usual cure is to replay a
share of general text. A source's ``weight`` is its share of the stage's training tokens (weights
are normalised, so they need not sum to 1).

One epoch is one pass over the stage's *main* source: the one marked ``main = true``, else the one
with the largest weight (the first of equals). The epoch's token budget is the main source's tokens
(after ``max_samples`` / ``max_tokens``) divided by its share, and every other source gets its share
of that budget: a source given more than it holds is over-sampled (whole passes over it, each in a
new seeded order, then a part of one), one given less is under-sampled (a seeded random subset).
So a small domain corpus weighted 0.9 beside a large general one weighted 0.1 is seen once per
epoch, not as many times as the general corpus is larger. Without any weight the sources are simply
concatenated, as before.

The budget rule itself, and the warning for a source repeated too often, are in
``recipes.config.mix_budget`` (no numpy: validate and plan use it too).

The result is an order of (source, example) pairs, computed from the examples' lengths alone and the
seed: the same inputs give the same order, so a resumed stage (the Trainer skips the batches it has
seen) continues it exactly. No torch; numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recipes.config.mix_budget import targets


@dataclass(frozen=True)
class SourceMix:
    """What one source contributes: its name, how many examples and tokens, its share of the tokens."""

    name: str
    examples: int
    tokens: int
    share: float


def cap(lengths: np.ndarray, max_samples: int | None, max_tokens: int | None) -> int:
    """How many of a source's first examples remain under ``max_samples`` and ``max_tokens`` (the first
    ones, as LLaMA-Factory's ``max_samples`` takes them)."""
    count = len(lengths) if max_samples is None else min(len(lengths), max_samples)
    if max_tokens is not None:
        count = min(count, int(np.searchsorted(np.cumsum(lengths[:count]), max_tokens, side="right")))
    return count


def mix(lengths: list[np.ndarray], weights: list[float | None], seed: int,
        names: list[str] | None = None, mains: list[bool | None] | None = None) -> tuple[np.ndarray, list[SourceMix]]:
    """The training order over the sources' examples and what each source got.

    ``lengths[i]``: the token count of each example of source ``i`` (already capped); ``weights[i]``:
    its share, or None for all (concatenation); ``mains[i]``: whether it is the main source. Returns
    an ``[n, 2]`` int64 array of (source, example index) rows in training order, and a ``SourceMix``
    per source."""
    names = names or [str(i) for i in range(len(lengths))]
    lengths = [np.asarray(x, dtype=np.int64) for x in lengths]
    if all(w is None for w in weights):
        order = np.concatenate([np.stack([np.full(len(x), i), np.arange(len(x))], axis=1)
                                for i, x in enumerate(lengths)] or [np.zeros((0, 2), np.int64)])
        return order.astype(np.int64), _summary(order, lengths, names)
    if any(w is None for w in weights):
        raise ValueError("give every source of the stage a weight, or none")
    wanted = targets([int(x.sum()) for x in lengths], weights, mains)
    rng = np.random.default_rng(seed)
    chosen = []
    for i, (x, target) in enumerate(zip(lengths, wanted)):
        picked = _take(x, target, np.random.default_rng([seed, i]))
        chosen.append(np.stack([np.full(len(picked), i), picked], axis=1))
    order = np.concatenate(chosen) if chosen else np.zeros((0, 2), np.int64)
    order = order[rng.permutation(len(order))]
    return order.astype(np.int64), _summary(order, lengths, names)


def _take(lengths: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """Example indices of one source whose tokens come closest to ``target``: whole seeded passes,
    then the prefix of one more pass that gets nearest to what is left."""
    if target <= 0 or len(lengths) == 0:
        return np.zeros(0, np.int64)
    size = int(lengths.sum())
    passes, rest = divmod(target, size) if size else (0, 0)
    parts = [rng.permutation(len(lengths)) for _ in range(passes)]
    last = rng.permutation(len(lengths))
    cumulative = np.cumsum(lengths[last])
    cut = int(np.searchsorted(cumulative, rest, side="left"))  # the first prefix reaching ``rest``
    if cut < len(last) and cut > 0 and cumulative[cut] - rest > rest - cumulative[cut - 1]:
        cut -= 1  # the shorter prefix is nearer
    elif cut < len(last) and cut == 0 and cumulative[0] - rest > rest:
        cut = -1
    parts.append(last[:cut + 1])
    return np.concatenate(parts).astype(np.int64)


def _summary(order: np.ndarray, lengths: list[np.ndarray], names: list[str]) -> list[SourceMix]:
    tokens = [int(lengths[i][order[order[:, 0] == i, 1]].sum()) if len(order) else 0 for i in range(len(lengths))]
    total = max(sum(tokens), 1)
    return [SourceMix(names[i], int((order[:, 0] == i).sum()), tokens[i], tokens[i] / total)
            for i in range(len(lengths))]
