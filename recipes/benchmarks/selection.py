"""Which questions a benchmark scores: its subjects (the ``subjects`` filter), each subject's shots from
its dev split, and a fixed stratified subset (``max_per_subject``) drawn with the recipe's seed. The
same items for every row, so that rows compare item by item. No torch.

The subset is written to ``<run>/benchmarks/<name>.json`` (the item keys and their digest), for the
record and for anyone re-scoring the same items elsewhere.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from recipes.benchmarks.layouts import Item, read_benchmark
from recipes.errors import RecipeError
from recipes.hashing import digest

SUBSET_DIR = "benchmarks"


@dataclass(frozen=True)
class BenchmarkPlan:
    """A ``[[benchmarks]]`` table with its path resolved and the recipe's seed."""

    name: str
    path: Path
    layout: str
    split: str | None
    shots: int
    max_per_subject: int | None
    subjects: tuple[str, ...] | None
    chat: bool
    language: str
    batch_size: int
    seed: int
    scorer: str = "builtin"
    options: tuple = ()  # the scorer's options, as sorted (key, value) pairs
    provider: object = None  # the scorer's BenchmarkScorer, from the plan's registry

    def as_dict(self) -> dict:
        fields = {k: v for k, v in asdict(self).items() if k != "provider"}
        return {**fields, "path": str(self.path), "subjects": list(self.subjects) if self.subjects else None,
                "options": dict(self.options)}


@dataclass
class Chosen:
    """The questions a benchmark scores, in subject order, with each subject's shots."""

    plan: BenchmarkPlan
    layout: str
    split: str
    language: str  # "en" or "zh"
    items: list[Item]
    shots: dict[str, list[Item]]  # subject -> its worked examples
    available: int  # questions in the chosen subjects before the subset

    @property
    def digest(self) -> str:
        """Names the scored items and their answers: rows with the same digest pair item by item."""
        return digest({"items": [(i.key, i.question, i.choices, i.answer) for i in self.items],
                       "shots": {s: [i.key for i in items] for s, items in self.shots.items()},
                       "language": self.language})

    @property
    def chance(self) -> float:
        """The expected accuracy of a uniform guess (4 choices: 25%)."""
        return sum(1 / len(i.choices) for i in self.items) / len(self.items)


def plan_benchmark(spec, base_dir: Path, seed: int, registry=None) -> BenchmarkPlan:
    """``spec``: a schema.Benchmark; its path resolved as data paths are (``bundled:`` too); its scorer
    plugin's provider from ``registry`` (default: the installed plugins')."""
    from recipes.config.loaded import resolve_data_path

    from recipes.plugins.registry import get_registry

    provider = (registry or get_registry()).scorers[spec.scorer]
    return BenchmarkPlan(spec.name, Path(resolve_data_path(spec.path, base_dir)), spec.layout, spec.split, spec.shots,
                         spec.max_per_subject, tuple(spec.subjects) if spec.subjects else None, spec.chat,
                         spec.language, spec.batch_size, seed, spec.scorer, tuple(sorted(spec.options.items())), provider)


def scorer_of(plan: BenchmarkPlan):
    """(the scorer's provider, its validated options)."""
    return plan.provider, plan.provider.options_model.model_validate(dict(plan.options))


def chosen_items(plan: BenchmarkPlan) -> "Chosen | None":
    """``choose(plan)``, or None where a scorer plugin reads ``path`` itself (its own task files)."""
    scorer, options = scorer_of(plan)
    return choose(plan) if scorer.reads_files(options) else None


def choose(plan: BenchmarkPlan) -> Chosen:
    """Read the files and choose the items; a RecipeError names every reason it cannot be scored."""
    from recipes.config.schema import did_you_mean

    files = read_benchmark(plan.path, plan.layout, plan.split)
    problems = []
    names = list(files.subjects)
    wanted = list(plan.subjects) if plan.subjects else names
    for name in wanted:
        if name not in files.subjects:
            problems.append(f"subjects: {name!r} is not a subject of split {files.split!r} in {plan.path}; "
                            f"{did_you_mean(name, names)}")
    subjects = [files.subjects[n] for n in wanted if n in files.subjects]
    for subject in subjects:
        unanswered = next((i for i in subject.items if i.answer is None), None)
        if unanswered is not None:
            hint = ' (C-Eval\'s test answers are not public: use split = "val")' if files.layout == "ceval" else ""
            problems.append(f"{unanswered.where}: split {files.split!r} has no answers{hint}; score a split "
                            "that ships its answers")
            break
        if len(subject.dev) < plan.shots:
            problems.append(f"subject {subject.name!r} has {len(subject.dev)} dev item(s), but shots = {plan.shots} "
                            "needs that many worked examples: add dev items for it, lower shots, or leave the "
                            "subject out with `subjects`")
    if problems:
        raise RecipeError(problems)
    items = []
    for subject in subjects:
        chosen = subject.items
        if plan.max_per_subject is not None and len(chosen) > plan.max_per_subject:
            # a string seed hashes the same in every process and Python version (random.seed, version 2)
            draw = random.Random(f"{plan.seed}/{plan.name}/{subject.name}")
            chosen = [chosen[i] for i in sorted(draw.sample(range(len(chosen)), plan.max_per_subject))]
        items += chosen
    language = plan.language if plan.language != "auto" else ("zh" if files.layout in ("ceval", "cmmlu") else "en")
    return Chosen(plan, files.layout, files.split, language, items,
                  {s.name: s.dev[:plan.shots] for s in subjects}, sum(len(s.items) for s in subjects))


def store_subset(run_dir: Path, chosen: Chosen) -> Path:
    """Write the chosen items' keys to ``<run>/benchmarks/<name>.json`` (written whole, then renamed)."""
    from recipes.run.manifest import write_atomically

    path = Path(run_dir) / SUBSET_DIR / f"{chosen.plan.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": chosen.plan.as_dict(), "layout": chosen.layout, "split": chosen.split,
              "items_digest": chosen.digest, "available": chosen.available,
              "items": [i.key for i in chosen.items],
              "shots": {s: [i.key for i in items] for s, items in chosen.shots.items()}}
    write_atomically(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return path
