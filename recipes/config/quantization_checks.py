"""How each stage loads its weights: the recipe's ``[quantization]``, or a stage's own
``[stages.quantization]`` table (or ``quantization = "none"``). Checked here: each table's backend and
options, how stages that load their weights differently chain, and what the distributed strategies
cannot shard. No torch.

The chaining rule: an adapter fits the weights it was trained against. A stage whose weights load
differently from its base stage's (bf16 LoRA, then 4-bit QLoRA) therefore starts from that stage's
merged model (``chaining = "merge"``), which is quantized as it loads; ``continue`` and ``stack`` would
put the earlier adapter on weights it was not trained on.
"""

from __future__ import annotations

from recipes.config.advice import setting_path
from recipes.config.collector import Collector
from recipes.config.plugin_options import check_options
from recipes.config.schema import MODEL_REF, Quantization, Recipe, did_you_mean
from recipes.plugins.registry import Registry


def tables(recipe: Recipe) -> list[tuple[tuple, Quantization]]:
    """Every quantization table the recipe writes, with where it is: the recipe's, then each stage's."""
    found = [(("quantization",), recipe.quantization)] if recipe.quantization is not None else []
    return found + [(("stages", index, "quantization"), stage.quantization) for index, stage in enumerate(recipe.stages)
                    if isinstance(stage.quantization, Quantization)]


def check_quantization(recipe: Recipe, registry: Registry, problems: Collector) -> None:
    known = True
    for where, table in tables(recipe):
        backend = registry.backends.get(table.backend)
        if backend is None:
            known = False
            problems.add(where + ("backend",), f"unknown quantization backend {table.backend!r}; "
                         f"{did_you_mean(table.backend, sorted(registry.backends))}")
        else:
            check_options(backend.options_model, table.options(), where, problems, flat=True)
    if known:
        _check_chaining(recipe, registry, problems)


def loading(recipe: Recipe, registry: Registry, index: int) -> dict:
    """How stage ``index`` loads its weights, options resolved (for comparing two stages)."""
    table = recipe.stage_quantization(index)
    if table is None:
        return {"backend": "none"}
    try:
        options = registry.backends[table.backend].options_model.model_validate(table.options())
    except ValueError:  # reported with the table's options
        return {"backend": table.backend, **table.options()}
    return {"backend": table.backend, **options.model_dump(mode="json")}


def quant_words(quant: dict) -> str:
    """``{"backend": "bitsandbytes", "bits": 4, "quant_type": "nf4", ...}`` as "bitsandbytes 4-bit nf4"."""
    if quant["backend"] == "none":
        return "unquantized"
    return (quant["backend"] + (f" {quant['bits']}-bit" if "bits" in quant else "")
            + (f" {quant['quant_type']}" if quant.get("bits") == 4 else "") + (f" {quant['scheme']}" if "scheme" in quant else ""))


def _check_chaining(recipe: Recipe, registry: Registry, problems: Collector) -> None:
    names = [stage.name for stage in recipe.stages]
    for index, stage in enumerate(recipe.stages):
        base = recipe.base_of(index)
        if base == MODEL_REF or base not in names[:index]:
            continue  # from the model, or a base reported elsewhere
        chaining = stage.settings(recipe.defaults).chaining
        mine, theirs = loading(recipe, registry, index), loading(recipe, registry, names.index(base))
        if chaining != "merge" and mine != theirs:
            problems.add(setting_path(recipe, index, "chaining"), f"chaining \"{chaining}\": stage {stage.name!r} "
                         f"loads its weights {quant_words(mine)}, its base stage {base!r} {quant_words(theirs)}, and "
                         f"{base}'s adapter fits only the weights it was trained on; set chaining = \"merge\" (the "
                         f"stage starts from {base}'s merged model, quantized as it loads), or give both stages "
                         "the same quantization")


def check_sharding(recipe: Recipe, problems: Collector) -> None:
    """bitsandbytes weights that DeepSpeed ZeRO-3 or FSDP cannot shard, at the table that asks for them."""
    d = recipe.distributed
    for where, table in tables(recipe):
        if table.backend != "bitsandbytes" or not _used(recipe, where):
            continue
        bits = table.options().get("bits", 4)
        if d.strategy == "deepspeed" and (d.zero_stage or 2) == 3:
            problems.add(("distributed", "zero_stage"), f"ZeRO-3 shards every parameter, and bitsandbytes' "
                         f"{bits}-bit weights ({'.'.join(map(str, where))}) cannot be sharded by DeepSpeed: use "
                         "zero_stage = 2, or strategy \"fsdp\" with 4-bit quant_storage = \"bf16\"")
        if d.strategy != "fsdp":
            continue
        storage = table.options().get("quant_storage", "uint8")
        if bits == 8:
            problems.add(("distributed", "strategy"), "FSDP cannot shard bitsandbytes' 8-bit weights: use 4-bit (with quant_storage = "
                         "\"bf16\"), or strategy \"ddp\"")
        elif storage not in ("bf16", "bfloat16"):
            problems.add(where + ("quant_storage",) if "quant_storage" in table.options()
                         else ("distributed", "strategy"), "FSDP with 4-bit QLoRA needs quant_storage = \"bf16\" "
                         "(FSDP flattens the packed 4-bit weights with the other bf16 parameters)")


def _used(recipe: Recipe, where: tuple) -> bool:
    """Whether a table loads some stage's weights (the recipe's is unused when every stage has its own)."""
    if where[0] == "stages":
        return True
    return any(stage.quantization is None for stage in recipe.stages)
