"""lm-evaluation-harness as a benchmark scorer: ``scorer = "lm-eval"`` in a ``[[benchmarks]]`` table.

It runs in-process on the model the stage has loaded (``HFLM(pretrained=model)``: no reload, LoRA and
QLoRA as they are), offline, into the same rows as the built-in scorer:

- by default on the same local files: the host reads the benchmark folder (C-Eval, CMMLU, MMLU,
  records) and chooses the items; this plugin writes one lm-eval task per subject (``dataset_path:
  json`` over jsonl files it writes, the subject's dev items as the few-shot split, the same header,
  question text and answer cue as the built-in prompt) and scores each question the lm-eval way
  (one log-likelihood per choice letter);
- with ``options = {tasks = [...]}`` on the user's own task YAMLs in the benchmark's ``path``
  (lm-eval's ``include_path``), one entry ``NAME/TASK`` per task. They must point at local files
  (``dataset_path: json`` and ``data_files``): nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from recipes.api import (LETTER_PREFIX, BenchmarkScorer, RecipeError, benchmark_row, hookimpl, prompt_header,
                         question_text)

REQUIRES_RECIPES_API = 1
LETTERS = "ABCDEFGHIJ"


class LmEvalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: Optional[list[str]] = Field(None, min_length=1, description="Your own lm-eval task names, defined by "
                                       "task YAMLs in the benchmark's path; default: tasks written from the "
                                       "benchmark's files.")
    metric: Literal["acc", "acc_norm"] = Field("acc", description="The per-item metric that decides right or wrong.")


def _reads_files(options: LmEvalOptions) -> bool:
    return not options.tasks


def _task_name(benchmark: str, subject: str) -> str:
    return "recipes_" + re.sub(r"[^A-Za-z0-9_]", "_", f"{benchmark}_{subject}")


def write_tasks(request) -> dict[str, list[int]]:
    """One lm-eval task per subject in ``request.work_dir``; task name -> the positions of its items."""
    import yaml

    chosen, folder = request.chosen, request.work_dir
    positions: dict[str, list[int]] = {}
    for position, item in enumerate(chosen.items):
        positions.setdefault(item.subject, []).append(position)
    tasks = {}
    for subject, where in positions.items():
        name = _task_name(request.name, subject)
        files = {}
        for split, items in (("dev", chosen.shots.get(subject, [])), ("test", [chosen.items[p] for p in where])):
            path = folder / f"{name}_{split}.jsonl"
            with open(path, "w", encoding="utf-8") as handle:
                for item in items:
                    handle.write(json.dumps({"prompt": question_text(item, chosen.language),
                                             "letters": list(LETTERS[:len(item.choices)]),
                                             "answer": item.answer}, ensure_ascii=False) + "\n")
            files[split] = str(path)
        if not chosen.shots.get(subject):  # lm-eval needs the few-shot split to exist; zero shots read none
            files["dev"] = files["test"]
        task = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": files},
                "test_split": "test", "fewshot_split": "dev", "fewshot_config": {"sampler": "first_n"},
                "output_type": "multiple_choice", "doc_to_text": "prompt", "doc_to_choice": "letters",
                "doc_to_target": "answer", "target_delimiter": LETTER_PREFIX[chosen.language],
                "fewshot_delimiter": "\n\n", "description": prompt_header(subject, chosen.language),
                "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                                {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(task, allow_unicode=True, sort_keys=False), encoding="utf-8")
        tasks[name] = where
    return tasks


def _evaluate(request, tasks: list[str], include_path, num_fewshot):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise RecipeError(f"the lm-eval benchmark scorer needs lm-eval ({exc}): pip install -e plugins/recipes-lm-eval") from None
    manager = TaskManager(include_path=str(include_path))
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise RecipeError(f"benchmark {request.name!r}: no lm-eval task {', '.join(map(repr, unknown))} in the task "
                          f"files under {include_path}; check the task names in options.tasks")
    lm = HFLM(pretrained=request.model, tokenizer=request.tokenizer, batch_size=request.batch_size)
    was_training = request.model.training
    try:
        out = simple_evaluate(model=lm, tasks=tasks, num_fewshot=num_fewshot, task_manager=manager, log_samples=True,
                              random_seed=request.seed, numpy_random_seed=request.seed, torch_random_seed=request.seed,
                              fewshot_random_seed=request.seed)
    finally:
        request.model.train(was_training)
    return out["samples"]


def _per_item(samples: list[dict], metric: str) -> list[tuple[int, bool, int, int]]:
    """(doc id, right, predicted choice, number of choices) per sample, in document order."""
    rows = []
    for sample in sorted(samples, key=lambda s: s["doc_id"]):
        scores = [float(r[0]) for r in sample["filtered_resps"]]
        if metric == "acc_norm":  # lm-eval normalises by the choice's length in bytes
            choices = sample.get("arguments") or []
            lengths = [max(len(a[1].encode("utf-8")), 1) if isinstance(a, (list, tuple)) and len(a) > 1 else 1
                       for a in choices] or [1] * len(scores)
            scores = [s / n for s, n in zip(scores, lengths)]
        picked = max(range(len(scores)), key=scores.__getitem__)
        rows.append((sample["doc_id"], bool(sample[metric]), picked, len(scores)))
    return rows


def score(request) -> dict:
    options: LmEvalOptions = request.options
    chosen = request.chosen
    if chosen is not None:  # the host's items from the benchmark's files
        tasks = write_tasks(request)
        samples = _evaluate(request, list(tasks), request.work_dir, request.shots)
        correct, predicted = ["0"] * len(chosen.items), ["A"] * len(chosen.items)
        for task, where in tasks.items():
            for doc, right, picked, _ in _per_item(samples[task], options.metric):
                correct[where[doc]], predicted[where[doc]] = "1" if right else "0", LETTERS[picked]
        subjects: dict[str, list[int]] = {}
        for position, item in enumerate(chosen.items):
            subjects.setdefault(item.subject, []).append(position)
        width = max(len(i.choices) for i in chosen.items)
        return {request.name: benchmark_row("".join(correct), "".join(predicted), LETTERS[:width], subjects,
                                            chosen.chance, chosen.digest, scorer="lm-eval", metric=options.metric,
                                            shots=request.shots)}
    samples = _evaluate(request, options.tasks, request.path, None)  # the tasks' own few-shot settings
    rows = {}
    for task in options.tasks:
        items = _per_item(samples[task], options.metric)
        width = max(n for *_, n in items)
        digest = hashlib.sha256(json.dumps([task, [(d, n) for d, _, _, n in items],
                                            [s.get("target") for s in samples[task]]], default=str).encode()).hexdigest()
        rows[f"{request.name}/{task}"] = benchmark_row(
            "".join("1" if right else "0" for _, right, _, _ in items), "".join(LETTERS[p] for _, _, p, _ in items),
            LETTERS[:width], {task: list(range(len(items)))}, sum(1 / n for *_, n in items) / len(items), digest,
            scorer="lm-eval", metric=options.metric)
    return rows


@hookimpl
def register_benchmark_scorers():
    return [BenchmarkScorer("lm-eval", score, LmEvalOptions, _reads_files,
                            description="lm-evaluation-harness in-process on the loaded model, offline")]
