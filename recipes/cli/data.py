"""`recipes data ...`: the data a recipe's stages train on."""

from __future__ import annotations

import click

from recipes.cli.common import main, _console, friendly

CLIPPED = 1200  # characters of an example shown without --full


@main.group()
def data():
    """Look at what the stages will train on."""


@data.command()
@click.argument("recipe")
@click.option("--stage", "stage_name", help="Only this stage (default: every stage).")
@click.option("-n", "count", default=2, show_default=True, help="Examples to show, trained tokens highlighted.")
@click.option("--full", is_flag=True, help="Show whole examples (default: the first 1200 characters of each, "
              "so a long system prompt can hide every trained token).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead (whole examples).")
@click.option("--removed", is_flag=True, help="Show examples of what cleaning removed (per source and reason: "
              "where, why, and for a duplicate where its original is) instead of training examples.")
@friendly
def inspect(recipe, stage_name, count, full, as_json, removed):
    """Statistics and highlighted examples of each stage's data (tokenized as a run would)."""
    import json

    from recipes.config.load import load_recipe
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry

    registry = get_registry()
    plan = make_plan(load_recipe(recipe, registry), registry)
    stages = plan.selected(stage_name)
    from transformers import AutoTokenizer

    from recipes.data.inspect import inspect_stage, print_inspection
    from recipes.planning.resolve import resolve_model

    path = resolve_model(plan.model_path, plan.revision, None, plan.recipe_path)  # Qwen v1: the native folder
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=plan.trust_remote_code)
    reports = [inspect_stage(stage, tokenizer, count, removed=removed) for stage in stages]
    if as_json:
        click.echo(json.dumps({"recipe": str(plan.recipe_path), "stages": reports}, indent=2, ensure_ascii=False))
        return
    console = _console()
    for report in reports:
        print_inspection(report, console, width=None if full else CLIPPED)
