"""Evaluation of a stage: loss and perplexity per evaluation set, and the figures a report shows."""

from __future__ import annotations

import math


def evaluate(trainer, sets: dict | None = None) -> dict:
    """Loss, perplexity and labelled-token count per evaluation set (``sets``: name -> Dataset, default
    the trainer's); the loss is the mean over the set's labelled tokens (``StageTrainer.evaluate``)."""
    sets = sets if sets is not None else trainer.eval_dataset
    metrics = trainer.evaluate(eval_dataset=sets)
    out = {}
    for name in sets:
        loss = metrics.get(f"eval_{name}_loss")
        if loss is not None and not math.isfinite(loss):
            from recipes.errors import TrainingError

            raise TrainingError(f"evaluation set {name!r}: the loss is {loss} (the model's outputs are not "
                                "finite); check the base model's weights, or lower the learning_rate")
        if loss is not None:
            out[name] = {"loss": loss, "perplexity": math.exp(min(loss, 700)),
                         "tokens": metrics.get(f"eval_{name}_tokens")}
    return out


def own_sets(results: dict | None, stage: str) -> dict | None:
    """A stage's own sets among the matrix's ``STAGE/SET`` results, by their short names."""
    if results is None:
        return None
    prefix = f"{stage}/"
    return {name[len(prefix):]: r for name, r in results.items() if name.startswith(prefix)} or None


def describe_eval(results: dict) -> str:
    """One line: each set's loss and perplexity, or the metrics a stage kind's own evaluation gives."""
    return ", ".join(f"{name} loss {r['loss']:.4f} (perplexity {r['perplexity']:,.1f})" if "perplexity" in r else
                     f"{name} " + " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items())
                     for name, r in results.items())


def headline_eval(before: dict | None, after: dict | None) -> dict:
    """The held-out set's figures (else the first set's) as the run report's columns."""
    out = {}
    for when, results in (("before", before), ("after", after)):
        perplexities = {name: r for name, r in (results or {}).items() if "perplexity" in r}
        if perplexities:
            first = perplexities.get("val") or next(iter(perplexities.values()))
            out[f"eval_loss_{when}"], out[f"eval_perplexity_{when}"] = first["loss"], first["perplexity"]
    return out

