"""`recipes validate` on the ``[[benchmarks]]`` tables: every file read and every item checked, as the
run will read them (no torch). Refused: a missing folder, a split without answers, a malformed row
(file:line), a subject without enough dev items for the shots, an unknown subject, two benchmarks of
one name; and strategies whose sharded model cannot run the scoring's forward pass on its own."""

from __future__ import annotations

from pathlib import Path

from recipes.config.collector import Collector
from recipes.config.loaded import LoadedRecipe
from recipes.errors import RecipeError


# scorers that a plugin package shipped with recipes (plugins/) provides, for an install hint
SCORER_PACKAGES = {"lm-eval": "recipes-lm-eval"}


def check_benchmarks(loaded: LoadedRecipe, registry, problems: Collector) -> None:
    from recipes.benchmarks.selection import choose, plan_benchmark
    from recipes.config.plugin_options import check_options
    from recipes.config.schema import did_you_mean

    recipe = loaded.recipe
    if not recipe.benchmarks:
        return
    if not recipe.eval_matrix:
        problems.warn(("eval_matrix",), "eval_matrix = false: the [[benchmarks]] are not scored; remove them or "
                      "set eval_matrix = true")
    d = recipe.distributed
    if d.strategy == "fsdp" or (d.strategy == "deepspeed" and (d.zero_stage or 2) == 3):
        problems.add(("distributed", "strategy"), "[[benchmarks]] are scored on each process's own model, but "
                     f"strategy \"{d.strategy}\"" + (" with ZeRO-3" if d.strategy == "deepspeed" else "")
                     + " shards its weights: use \"ddp\" (or ZeRO-2), or remove the benchmarks")
    seen = set()
    base_dir = Path(loaded.path).resolve().parent
    for index, spec in enumerate(recipe.benchmarks):
        where = ("benchmarks", index)
        if spec.name in seen:
            problems.add(where + ("name",), f"benchmark name {spec.name!r} is used twice; give each its own name")
        seen.add(spec.name)
        scorer = registry.scorers.get(spec.scorer)
        if scorer is None:
            package = SCORER_PACKAGES.get(spec.scorer)
            problems.add(where + ("scorer",), f"unknown benchmark scorer {spec.scorer!r}; " + (
                f"the plugin package {package} provides it: pip install -e plugins/{package}" if package
                else did_you_mean(spec.scorer, sorted(registry.scorers))))
            continue
        check_options(scorer.options_model, spec.options, where + ("options",), problems)
        try:
            if not scorer.reads_files(scorer.options_model.model_validate(spec.options)):
                continue  # the path is the scorer's own
        except ValueError:
            continue  # the options' problems are said above
        try:
            choose(plan_benchmark(spec, base_dir, 0, registry))
        except RecipeError as exc:
            for problem in exc.problems:
                text = str(problem)
                key = "subjects" if text.startswith("subjects:") else "shots" if "dev item" in text else "path"
                problems.add(where + (key,), text[len("subjects: "):] if key == "subjects" else text)
