"""`recipes prepare RECIPE [--stage S]`: tokenize every stage's data into the token store ahead of a
run, e.g. on a machine without a GPU; copy (or share) the cache folder, and `recipes run` on the GPU
machine then reads the prepared store ("data: from the prepared store ...").

Every stage is prepared with the base model's tokenizer: a later stage's run loads the tokenizer the
earlier stage saved, which is the same one (same vocabulary, merges and chat template: the same key).
"""

from __future__ import annotations


def prepare_recipe(recipe: str, stage_name: str | None, workers: int | None, say) -> list[dict]:
    from transformers import AutoTokenizer

    from recipes.config.load import load_recipe
    from recipes.data.prepare import prepare
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry
    from recipes.planning.resolve import resolve_model

    registry = get_registry()
    plan = make_plan(load_recipe(recipe, registry), registry)
    stages = plan.selected(stage_name)
    path = resolve_model(plan.model_path, plan.revision, None, plan.recipe_path)
    done = []
    for stage in stages:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=plan.trust_remote_code)
        say(f"stage {stage.name} ({stage.kind})")
        if not stage.language_modelling:  # its kind prepares its data at the start of the stage (in memory)
            say(f"  nothing to store: a {stage.kind} stage prepares its data when it runs")
            continue
        data = prepare(stage, tokenizer, say, workers)
        stats = data.stats
        say(f"  {stats.records:,} records -> {len(data.train):,} training "
            f"{'rows' if data.packing else 'sequences'}, {stats.tokens:,} tokens"
            + (f"; {stats.bad} bad records skipped" if stats.bad else "")
            + (f"; {data.packing.describe()}" if data.packing else ""))
        done.append({"stage": stage.name, "store": str(data.store.folder), "key": data.cache_key})
    return done
