"""The benchmarks of a plan scored on the model a stage has loaded: the starting model (before the
first stage trains) and each stage's trained model. Each entry of the result is one benchmark (and
``NAME/chat`` for its chat-template variant) with its figures (recipes.benchmarks.statistics), its
items' digest, and per item whether it was right and which letter was predicted (the paired test
between rows reads them).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from recipes.plugins.hookspecs import BenchmarkRequest

from recipes.benchmarks.layouts import LETTERS
from recipes.benchmarks.prompts import chat_prompt, completion_prompt
from recipes.benchmarks.selection import store_subset
from recipes.benchmarks.statistics import describe_change, describe_row, paired_change, row_figures


def score_benchmarks(benchmarks, model, tokenizer, say, who: str, run_dir=None, autocast_dtype=None,
                     previous: dict | None = None, previous_label: str | None = None) -> dict:
    """Score every benchmark in ``benchmarks`` (BenchmarkPlan) on ``model``, by the built-in scorer or
    its scorer plugin; say each row (and its change from ``previous``, the row before it in the
    plan); ``run_dir``: store the chosen subsets."""
    from recipes.benchmarks.selection import chosen_items, scorer_of

    results = {}
    for plan in benchmarks:
        chosen = chosen_items(plan)
        if run_dir is not None and chosen is not None:
            store_subset(run_dir, chosen)
        scorer, options = scorer_of(plan)
        with tempfile.TemporaryDirectory(prefix=f"recipes-{plan.name}-") as work:
            entries = scorer.score(BenchmarkRequest(plan.name, plan.path, plan.shots, plan.batch_size, plan.seed,
                                                    options, chosen, model, tokenizer, Path(work), say, plan.as_dict(),
                                                    autocast_dtype))
        for name, row in entries.items():
            line = (f"benchmark {name} {who}" + (f" ({plan.scorer})" if plan.scorer != "builtin" else "")
                    + f": {describe_row(row)}")
            if row.get("truncated"):
                line += f"; {row['truncated']} prompt(s) cut on the left to the model's positions"
            before = (previous or {}).get(name)
            if before and before.get("items_digest") == row.get("items_digest") and "per_item" in before:
                line += f"; change from {previous_label}: " + describe_change(
                    paired_change(before["per_item"]["correct"], row["per_item"]["correct"]))
            say(line)
        results.update(entries)
    return results


def benchmark_row(correct: str, predicted: str, letters: str, subjects: dict[str, list[int]], chance: float,
                  items_digest: str, **extra) -> dict:
    """A row as the report reads it: ``correct`` one "1"/"0" per item, ``predicted`` one letter per
    item, ``subjects`` each subject's item positions, ``items_digest`` names the items (rows pair only
    with the same digest); ``extra`` keys are kept (e.g. the scorer's own figures)."""
    return {**row_figures(correct, predicted, letters, subjects, chance), **extra, "items_digest": items_digest,
            "per_item": {"correct": correct, "predicted": predicted}}


def builtin_rows(request) -> dict:
    """The built-in scorer: the completion prompt (and the chat variant), letter logits."""
    from recipes.benchmarks.scoring import letter_logits, letter_token_ids, predictions

    chosen, model, tokenizer, say, name = request.chosen, request.model, request.tokenizer, request.say, request.name
    max_length = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    entries = {}
    variants = [("completion", name)] + ([("chat", f"{name}/chat")] if request.table.get("chat") else [])
    for prompt_kind, entry in variants:
        if prompt_kind == "chat" and not tokenizer.chat_template:
            say(f"benchmark {entry}: the tokenizer has no chat template; only the completion prompt is scored")
            continue
        started = time.monotonic()
        prompts = [chat_prompt(tokenizer, i, chosen.shots[i.subject], chosen.language) if prompt_kind == "chat"
                   else completion_prompt(i, chosen.shots[i.subject], chosen.language) for i in chosen.items]
        width = max(len(i.choices) for i in chosen.items)
        ids = letter_token_ids(tokenizer, prompts[0], chosen.language, width)
        logits, cut = letter_logits(model, tokenizer, prompts, ids, request.batch_size, max_length,
                                    request.autocast_dtype)
        picked = predictions(logits, [len(i.choices) for i in chosen.items])
        subjects: dict[str, list[int]] = {}
        for position, item in enumerate(chosen.items):
            subjects.setdefault(item.subject, []).append(position)
        entries[entry] = benchmark_row(
            "".join("1" if p == i.answer else "0" for p, i in zip(picked, chosen.items)),
            "".join(LETTERS[p] for p in picked), LETTERS[:width], subjects, chosen.chance, chosen.digest,
            prompt=prompt_kind, layout=chosen.layout, split=chosen.split, shots=request.shots, truncated=cut,
            seconds=round(time.monotonic() - started, 2))
    return entries


def stage_benchmarks(stage_run, start: bool) -> dict | None:
    """A stage's benchmark rows: ``start``, the starting model's (the first stage, before it trains);
    else this stage's trained model's, unless the stage sets ``benchmarks = false``."""
    plan, stage = stage_run.plan, stage_run.stage
    if not plan.benchmarks or (start and stage.index != 0) or (not start and not stage.benchmarks):
        return None
    from recipes.training import distributed

    half = stage_run.device == "cuda" and stage_run.precision in ("bf16", "fp16")
    previous, label = (None, None) if start else previous_row(stage_run, plan, stage.index)
    return score_benchmarks(plan.benchmarks, stage_run.model, stage_run.tokenizer, stage_run.say,
                            "on the starting model" if start else f"after {stage.name}",
                            plan.run_dir if distributed.is_main() else None,
                            stage_run.dtype if half else None, previous, label)


def previous_row(stage_run, plan, index: int) -> tuple[dict | None, str | None]:
    """The row before stage ``index``'s in the report: the nearest earlier stage that scored the
    benchmarks, else the starting model's."""
    from recipes.run.manifest import read_json_object

    for earlier in reversed(plan.stages[:index]):
        rows = read_json_object(earlier.folder / "stage.json").get("benchmarks") or {}
        if rows.get("after"):
            return rows["after"], f"after {earlier.name}"
    if index == 0:
        return getattr(stage_run, "benchmarks_start", None), "the starting model"
    first = read_json_object(plan.stages[0].folder / "stage.json").get("benchmarks") or {}
    return first.get("start"), "the starting model"


def stale_note(plan, stage) -> str | None:
    """For a stage skipped as done: a note when its stored benchmark rows are not the plan's (a
    benchmark added, removed or changed since it was scored), so the report is not read as current.
    No torch: the benchmarks' files are read again and their items' digests compared."""
    from recipes.benchmarks.selection import chosen_items
    from recipes.run.manifest import read_json_object

    stored = (read_json_object(stage.folder / "stage.json").get("benchmarks") or {}).get("after") or {}
    wanted = {}
    if stage.benchmarks:
        for benchmark in plan.benchmarks:
            chosen = chosen_items(benchmark)
            wanted[benchmark.name] = chosen.digest if chosen is not None else None
    if {name.split("/")[0] for name in stored} == set(wanted) and all(
            digest is None or stored[name].get("items_digest") == digest for name, digest in wanted.items()
            if name in stored):
        return None
    return (f"note: the benchmark rows stored for {stage.name!r} are not the recipe's benchmarks (changed since "
            f"it was scored); they are not scored again for a stage that is done: `recipes run --restart "
            f"{stage.name}` scores them on a newly trained stage")
