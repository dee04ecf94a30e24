"""`recipes validate`, `recipes plan`, `recipes schema`: the recipe before anything heavy loads."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from recipes.errors import RecipeError
from recipes.cli.common import main, _console, _fail, friendly


@main.command()
@click.argument("recipes", nargs=-1, required=True)
@click.option("--strict", is_flag=True, help="Treat warnings (likely-wrong settings) as errors.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (errors, warnings, plans).")
@friendly
def validate(recipes, strict, as_json):
    """Check recipe files (or bundled names) without loading anything heavy.

    Exit code 0 when every recipe is good, 2 when any has an error (or, with --strict, a warning)."""
    import json

    from recipes.config.load import check_recipe
    from recipes.plugins.registry import get_registry
    from recipes.planning.summary import summarize, summary_lines

    registry = get_registry()
    reports, error_lines, warning_lines = [], [], []
    for name in recipes:
        checked = check_recipe(name, registry, preflight=True)
        errors = checked.problems + (checked.warnings if strict else [])
        warnings = [] if strict else checked.warnings
        error_lines += [str(p) for p in errors]
        warning_lines += [str(p) for p in warnings]
        reports.append({"recipe": checked.name, "ok": not errors,
                        "errors": [p.as_dict() for p in errors], "warnings": [p.as_dict() for p in warnings],
                        "plan": summarize(checked.loaded) if checked.loaded and not errors else None})
    if as_json:
        click.echo(json.dumps({"ok": not error_lines, "recipes": reports}, indent=2, ensure_ascii=False))
        sys.exit(2 if error_lines else 0)
    from rich.markup import escape

    console, err = _console(), _console(stderr=True)
    for line in warning_lines:
        err.print(f"[yellow]warning:[/] {escape(line)}", markup=True, highlight=False)
    for report in reports:
        if report["plan"] is not None:
            console.print(f"[green]ok[/] {report['recipe']}")
            for line in summary_lines(report["plan"]):
                console.print(f"  {line}", markup=False)
    if error_lines:
        _fail(error_lines, 2)


@main.command(name="plan")
@click.argument("recipe")
@click.option("--device", type=click.Choice(["gpu", "cpu"]), default="gpu", show_default=True,
              help="Estimate memory per GPU (precision auto = bf16), or for a CPU run (auto = fp32).")
@click.option("--tokenize", is_flag=True,
              help="Count tokens with the model's tokenizer (exact; imports transformers, needs the tokenizer "
                   "at hand) instead of estimating them from the data's size.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="GPUs the run will use: the per-GPU memory follows the recipe's [distributed] strategy.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@friendly
def plan_command(recipe, device, tokenize, nproc, as_json):
    """Per stage, before anything runs: parameters (total, trainable, share, LoRA layers), memory
    (weights, LoRA, gradients, optimizer, activations, logits and loss, total) and steps.

    No weights are loaded: shapes come from the model's config.json (a local folder, the HF cache,
    or the shipped configs of Qwen-7B and Qwen2.5-7B)."""
    import json

    from recipes.planning.estimate import estimate_lines, recipe_estimate
    from recipes.config.load import load_recipe
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry

    registry = get_registry()
    loaded = load_recipe(recipe, registry)
    estimate = recipe_estimate(loaded, make_plan(loaded, registry), "cuda" if device == "gpu" else "cpu", tokenize,
                               nproc)
    if as_json:
        click.echo(json.dumps(estimate, indent=2, ensure_ascii=False))
        return
    console = _console()
    for line in estimate_lines(estimate):
        console.print(line, markup=False)


@main.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file (default: print).")
@friendly
def schema(output):
    """The JSON Schema of recipe files, with the installed plugins' options, for editors.

    Save it and point your editor at it, e.g. a first line `#:schema ./recipe.schema.json` in a
    recipe (Even Better TOML / taplo)."""
    import json

    from recipes.config.json_schema import recipe_schema
    from recipes.plugins.registry import get_registry

    text = json.dumps(recipe_schema(get_registry()), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        if not output.parent.is_dir():
            raise RecipeError(f"--output {output}: the folder {output.parent} does not exist; create it first")
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise RecipeError(f"--output {output}: cannot write it ({exc.strerror}); give another path") from None
        _console().print(f"wrote {output}")
