"""The figures a benchmark row is reported with: accuracy and its 95% interval (Wilson's score
interval, which stays inside [0, 1] on small sets), the share of each predicted letter, and the
change between two rows tested on the same items (McNemar's exact test: only the items one row got
right and the other wrong carry information, so it has far more power than comparing two intervals).
Plain Python: the report reads it without torch or scipy.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054
SIGNIFICANT = 0.05


def wilson_interval(correct: int, items: int, z: float = Z95) -> tuple[float, float]:
    if items == 0:
        return 0.0, 1.0
    p = correct / items
    centre = (p + z * z / (2 * items)) / (1 + z * z / items)
    half = z * math.sqrt(p * (1 - p) / items + z * z / (4 * items * items)) / (1 + z * z / items)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(gained: int, lost: int) -> float:
    """Two-sided exact p-value for ``gained`` items right only in the later row and ``lost`` right only
    in the earlier one: a binomial test of the smaller count against n = gained + lost, p = 1/2."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(gained, lost) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def letter_shares(predicted: str, letters: str) -> dict[str, float]:
    """The share of each letter among the predictions (a model that always answers "C" shows C 100%)."""
    total = len(predicted) or 1
    return {letter: predicted.count(letter) / total for letter in letters}


def row_figures(correct: str, predicted: str, letters: str, subjects: dict[str, list[int]], chance: float) -> dict:
    """One row's figures: ``correct`` is one "1"/"0" per item, ``predicted`` one letter per item,
    ``subjects`` each subject's item positions."""
    right, items = correct.count("1"), len(correct)
    low, high = wilson_interval(right, items)
    return {"accuracy": right / items if items else 0.0, "low": low, "high": high, "items": items, "correct": right,
            "chance": chance, "letters": letter_shares(predicted, letters),
            "subjects": {name: {"accuracy": sum(correct[i] == "1" for i in where) / len(where), "items": len(where)}
                         for name, where in subjects.items()}}


def paired_change(before: str, after: str) -> dict:
    """The change from ``before`` to ``after`` (per-item "1"/"0" strings over the same items): points,
    the items each way, McNemar's exact p and whether it is significant at 5%."""
    gained = sum(1 for b, a in zip(before, after) if b == "0" and a == "1")
    lost = sum(1 for b, a in zip(before, after) if b == "1" and a == "0")
    p = mcnemar_exact(gained, lost)
    points = 100 * (after.count("1") - before.count("1")) / len(after) if after else 0.0
    return {"points": points, "gained": gained, "lost": lost, "items": len(after), "test": "McNemar exact",
            "p": p, "significant": p < SIGNIFICANT}


def describe_change(change: dict) -> str:
    verdict = "significant" if change["significant"] else "not significant"
    return (f"{change['points']:+.1f} points ({change['gained']} gained, {change['lost']} lost; McNemar exact "
            f"p = {change['p']:.3g}, {verdict})")


def describe_row(figures: dict) -> str:
    letters = " ".join(f"{letter} {share:.0%}" for letter, share in figures["letters"].items() if share)
    return (f"accuracy {figures['accuracy']:.1%} (95% CI {figures['low']:.1%}-{figures['high']:.1%}, "
            f"{figures['items']} items, chance {figures['chance']:.1%}); answers {letters}")
