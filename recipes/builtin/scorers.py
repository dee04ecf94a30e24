"""The built-in benchmark scorer (``scorer = "builtin"``, the default): the completion prompt (and
its chat-template variant with ``chat = true``), letter logits at the prompt's last position
(recipes.benchmarks)."""

from __future__ import annotations

from recipes.plugins.hookspecs import BenchmarkScorer, NoOptions, hookimpl


def _score(request) -> dict:
    from recipes.benchmarks.evaluate import builtin_rows

    return builtin_rows(request)


@hookimpl
def register_benchmark_scorers():
    return [BenchmarkScorer("builtin", _score, NoOptions,
                            description="letter logits after the same completion prompt, one forward per question")]
