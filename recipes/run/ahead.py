"""`recipes prepare RECIPE [--stage S]`: tokenize every stage's data into the token store ahead of a
run, e.g. on a machine without a GPU; copy (or share) the cache folder, and `recipes run` on the GPU
machine then reads the prepared store ("data: from the prepared store ...").

Every stage is prepared with the base model's tokenizer: a later stage's run loads the tokenizer the
earlier stage saved, which is the same one (same vocabulary, merges and chat template: the same key).

When every stage's data is prepared already, the command says so without loading transformers
(``recipes.data.ready``): a ready store takes the time of ``recipes validate``. A stage of documents
is prepared without transformers too once transformers has built the model's tokenizer
(``recipes.data.known_tokenizer``).
"""

from __future__ import annotations


def prepare_recipe(recipe: str, stage_name: str | None, workers: int | None, say) -> list[dict]:
    from recipes.config.load import load_recipe
    from recipes.data.ready import remembered
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry

    registry = get_registry()
    plan = make_plan(load_recipe(recipe, registry), registry)
    stages = plan.selected(stage_name)
    for stage in (s for s in stages if not s.language_modelling):  # its kind reads its data in memory when it runs
        say(f"stage {stage.name} ({stage.kind}): nothing to store; the stage prepares its data when it runs")
    stages = [s for s in stages if s.language_modelling]
    records = [remembered(plan, stage, registry) for stage in stages]
    if all(records):
        for record in records:
            for line in record["lines"]:
                say(line)
        return [record["result"] for record in records]
    return [prepare_stage(plan, stage, registry, workers, say) for stage in stages]


def stage_tokenizer(path: str, plan, stage):
    """The tokenizer a stage's preparation tokenizes with: for documents only, the one transformers
    built for this model before, loaded without transformers (``recipes.data.known_tokenizer``)."""
    from recipes.data.known_tokenizer import known_tokenizer, remember_tokenizer

    documents = stage.records == "documents" and all(s.format.yields == "documents" for s in stage.eval_sources)
    if documents:
        known = known_tokenizer(path, plan.trust_remote_code)
        if known is not None:
            return known
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=plan.trust_remote_code)
    if documents:
        remember_tokenizer(path, plan.trust_remote_code, tokenizer)
    return tokenizer


def prepare_stage(plan, stage, registry, workers: int | None, say) -> dict:
    from recipes.data.prepare import prepare, store_line
    from recipes.data.ready import remember
    from recipes.planning.resolve import resolve_model

    path = resolve_model(plan.model_path, plan.revision, None, plan.recipe_path)
    tokenizer = stage_tokenizer(path, plan, stage)
    heading = f"stage {stage.name} ({stage.kind})"
    say(heading)
    data = prepare(stage, tokenizer, say, workers)
    stats = data.stats
    summary = (f"  {stats.records:,} records -> {len(data.train):,} training "
               f"{'rows' if data.packing else 'sequences'}, {stats.tokens:,} tokens"
               + (f"; {stats.bad} bad records skipped" if stats.bad else "")
               + (f"; {data.packing.describe()}" if data.packing else ""))
    say(summary)
    from recipes.data.inspect import removed_lines

    removals = [f"  {line}" for line in removed_lines(stats.removed)]  # said per store by prepare, kept for a rerun
    result = {"stage": stage.name, "store": str(data.store.folder), "key": data.cache_key, "removed": stats.removed}
    multiple = len(stage.sources) > 1
    lines = [heading] + [store_line(source.name if multiple else None, store.folder, store.folder.name, True)
                         for source, store in zip(stage.sources, data.stores)] + [summary] + removals
    remember(plan, stage, registry, lines, result, data.markers)
    return result
