"""`recipes convert` and `recipes import ...`: models and configs from elsewhere."""

from __future__ import annotations

from pathlib import Path

import click

from recipes.errors import RecipeError
from recipes.cli.common import main, _console, _fail, friendly


@main.command()
@click.argument("source", metavar="SRC")
@click.option("--to", "to", required=True, type=click.Path(path_type=Path), help="The folder to write (new, or empty).")
@friendly
def convert(source, to):
    """Convert a Qwen-7B v1 checkpoint (QWenLMHeadModel; a local folder or a hub id in the local HF cache)
    into a native Qwen2ForCausalLM folder, exactly, with Qwen's tokenizer and the ChatML template."""
    from recipes.family import family

    convert = family().convert
    if convert is None:
        raise RecipeError(f"the {family().name} model family has no converter")
    convert(source, to, _console())


@main.group(name="import")
def import_group():
    """Turn another tool's training configs into one recipe."""


@import_group.command(name="llamafactory")
@click.argument("configs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=Path("recipe.toml"),
              show_default=True, help="The recipe file to write.")
@click.option("--dataset-dir", type=click.Path(file_okay=False, path_type=Path),
              help="The folder of dataset_info.json (default: each config's dataset_dir, from the current folder, "
                   "as LLaMA-Factory reads it).")
@click.option("--force", is_flag=True, help="Replace --output if it exists.")
@friendly
def import_llamafactory(configs, output, dataset_dir, force):
    """LLaMA-Factory configs (stage pt / sft, LoRA or QLoRA, and their merge/export configs) as one
    recipe: the chain recovered from their paths, every key mapped or written as a comment saying why
    it was left out. The recipe is validated; the command says what to check by hand."""
    from recipes.config.importing.llamafactory import import_llamafactory as build
    from recipes.config.load import check_recipe
    from recipes.plugins.registry import get_registry
    from recipes.planning.summary import summarize, summary_lines

    if output.exists() and not force:
        raise RecipeError(f"{output}: already exists; give another -o or --force to replace it")
    imported = build(list(configs), output, dataset_dir)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(imported.text, encoding="utf-8")
    console, err = _console(), _console(stderr=True)
    console.print(f"wrote {output}: {len(imported.stages)} stage(s), "
                  + ", ".join(f"{s.name} ({s.kind}, from {s.config.path})" for s in imported.stages))
    checked = check_recipe(str(output), get_registry())
    from rich.markup import escape

    for warning in checked.warnings:
        err.print(f"[yellow]warning:[/] {escape(str(warning))}", markup=True, highlight=False)
    console.print("check by hand:")
    for line in imported.checks:
        console.print(f"  - {line}", markup=False)
    if checked.problems:
        _fail([str(p) for p in checked.problems] + [f"{output} is written; fix the above in it (or in the configs)"], 2)
    console.print(f"[green]ok[/] {output} validates", markup=True)
    for line in summary_lines(summarize(checked.loaded)):
        console.print(f"  {line}", markup=False)
