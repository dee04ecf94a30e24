"""Weighted sources: achieved token shares, reproducible order, caps."""

from __future__ import annotations

import numpy as np
import pytest

from recipes.data.mixing import cap, mix


def _lengths(n, seed):
    return np.random.default_rng(seed).integers(20, 400, size=n)


def test_weights_give_the_token_shares_over_unequal_sources():
    domain, general = _lengths(3000, 1), _lengths(200, 2)  # the general source is 15x smaller
    order, got = mix([domain, general], [0.9, 0.1], seed=42, names=["domain", "general"])
    assert [s.name for s in got] == ["domain", "general"]
    assert got[0].share == pytest.approx(0.9, abs=0.01) and got[1].share == pytest.approx(0.1, abs=0.01)
    # an epoch is one pass over the main source (the largest weight); the small one is over-sampled to its share
    assert got[0].examples == len(domain) and got[0].tokens == int(domain.sum())
    assert got[1].examples > len(general)
    assert len(order) == got[0].examples + got[1].examples
    # interleaved, not one source after the other
    first = order[: len(order) // 10, 0]
    assert 0 < (first == 1).mean() < 0.3


def test_the_same_seed_gives_the_same_order_and_another_seed_another():
    sources = [_lengths(500, 3), _lengths(80, 4)]
    a, _ = mix(sources, [0.7, 0.3], seed=7)
    b, _ = mix(sources, [0.7, 0.3], seed=7)
    c, _ = mix(sources, [0.7, 0.3], seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # (that a resumed stage continues the very same order: tests/test_mix_store.py, on a reopened layout)


def test_without_weights_the_sources_are_concatenated():
    order, got = mix([np.array([5, 6]), np.array([7])], [None, None], seed=0)
    assert order.tolist() == [[0, 0], [0, 1], [1, 0]]
    assert [s.tokens for s in got] == [11, 7]
    with pytest.raises(ValueError, match="every source of the stage a weight, or none"):
        mix([np.array([5]), np.array([7])], [0.5, None], seed=0)


def test_max_samples_and_max_tokens_take_the_first_examples():
    lengths = np.array([10, 20, 30, 40])
    assert cap(lengths, None, None) == 4
    assert cap(lengths, 2, None) == 2
    assert cap(lengths, None, 60) == 3 and cap(lengths, None, 59) == 2
    assert cap(lengths, 1, 1000) == 1
