"""Evaluation of a stage: loss and perplexity per evaluation set, and the figures a report shows."""

from __future__ import annotations

import math


def evaluate(trainer) -> dict:
    """Loss and perplexity per evaluation set (the mean of its batches' mean token losses)."""
    metrics = trainer.evaluate()
    sets = trainer.eval_dataset if isinstance(trainer.eval_dataset, dict) else {"": trainer.eval_dataset}
    out = {}
    for name in sets:
        loss = metrics.get(f"eval_{name}_loss" if name else "eval_loss")
        if loss is not None and not math.isfinite(loss):
            from recipes.errors import TrainingError

            raise TrainingError(f"evaluation set {name or 'eval'!r}: the loss is {loss} (the model's outputs are not "
                                "finite); check the base model's weights, or lower the learning_rate")
        if loss is not None:
            out[name or "eval"] = {"loss": loss, "perplexity": math.exp(min(loss, 700))}
    return out


def describe_eval(results: dict) -> str:
    return ", ".join(f"{name} loss {r['loss']:.4f} (perplexity {r['perplexity']:,.1f})" for name, r in results.items())


def headline_eval(before: dict | None, after: dict | None) -> dict:
    """The held-out set's figures (else the first set's) as the run report's columns."""
    out = {}
    for when, results in (("before", before), ("after", after)):
        if results:
            first = results.get("val") or next(iter(results.values()))
            out[f"eval_loss_{when}"], out[f"eval_perplexity_{when}"] = first["loss"], first["perplexity"]
    return out

