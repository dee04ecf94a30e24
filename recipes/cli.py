"""The command line. Thin: parse, call one function, turn our errors into one-line messages.

Exit codes: 0 done, 1 training failed, 2 bad input, 130 interrupted.
torch and transformers are imported only inside `run`.
"""

from __future__ import annotations

import shutil
import sys
from functools import wraps
from pathlib import Path

import click

from recipes import __version__
from recipes.errors import RecipeError, TrainingError


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _fail(lines: list[str], code: int):
    err = _console(stderr=True)
    for line in lines:
        err.print(f"[red]error:[/] {line}", markup=True, highlight=False, soft_wrap=True)
    sys.exit(code)


def friendly(command):
    """Our errors become one line each (exit 2); training failures exit 1; Ctrl-C exits 130."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RecipeError as exc:
            _fail([str(p) for p in exc.problems], 2)
        except TrainingError as exc:
            _fail([str(exc)], 1)
        except KeyboardInterrupt:
            _console(stderr=True).print("interrupted")
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="recipes")
def main():
    """Run a whole Qwen domain-adaptation plan (continued pre-training, then SFT) from one recipe."""


@main.command()
@click.argument("recipe")
@click.option("--output-dir", "-o", help="Run folder (default: the recipe's output_dir, else runs/<name>).")
@friendly
def run(recipe, output_dir):
    """Run every stage of RECIPE (a file, or a bundled recipe name) in order."""
    from recipes.load import load_recipe
    from recipes.plan import make_plan
    from recipes.plugins import get_registry

    registry = get_registry()
    loaded = load_recipe(recipe, registry)  # validation first: nothing heavy is loaded on a mistake
    plan = make_plan(loaded, registry, output_dir)
    from recipes.runner import run_plan

    run_plan(plan, _console())


@main.command()
@click.argument("recipes", nargs=-1, required=True)
@friendly
def validate(recipes):
    """Check recipe files (or bundled names) without loading anything heavy."""
    from recipes.load import load_recipe
    from recipes.plan import make_plan
    from recipes.plugins import get_registry

    registry = get_registry()
    console = _console()
    problems = []
    for name in recipes:
        try:
            loaded = load_recipe(name, registry)
        except RecipeError as exc:
            problems.extend(str(p) for p in exc.problems)
            continue
        plan = make_plan(loaded, registry)
        console.print(f"[green]ok[/] {loaded.path}: {len(plan.stages)} stage(s), run folder {plan.run_dir}")
        for stage in plan.stages:
            files = sum(len(files) for _, _, files in stage.sources)
            console.print(f"  {stage.index + 1}. {stage.name} ({stage.kind}) from {stage.base}: "
                          f"{files} data file(s), effective batch {stage.effective_batch}, "
                          f"lr {stage.settings['learning_rate']:g}, cutoff_len {stage.settings['cutoff_len']}")
    if problems:
        _fail(problems, 2)


@main.command(name="list")
def list_recipes():
    """List the bundled recipes."""
    import tomllib

    from qwen_recipes import bundled_recipes

    console = _console()
    bundled = bundled_recipes()
    width = max(map(len, bundled), default=0)
    for name, path in bundled.items():
        description = tomllib.loads(path.read_text(encoding="utf-8")).get("description", "")
        console.print(f"[bold]{name:<{width}}[/]  {description}")


@main.command()
@click.argument("name")
@click.argument("destination", type=click.Path(path_type=Path))
@friendly
def cp(name, destination):
    """Copy the bundled recipe NAME to DESTINATION, to edit."""
    from qwen_recipes import bundled_recipes
    from recipes.schema import did_you_mean

    bundled = bundled_recipes()
    stem = name[:-5] if name.endswith(".toml") else name
    if stem not in bundled:
        raise RecipeError(f"{name}: no bundled recipe of that name; {did_you_mean(stem, sorted(bundled))}")
    target = destination / f"{stem}.toml" if destination.is_dir() else destination
    if target.exists():
        raise RecipeError(f"{target}: already exists; give another path or remove it first")
    shutil.copyfile(bundled[stem], target)
    _console().print(f"copied {stem} to {target}")


@main.command()
@friendly
def plugins():
    """List the loaded plugins, their versions, the hooks each implements and what it provides."""
    from recipes.plugins import get_registry

    registry = get_registry()
    console = _console()
    descriptions = {**{f"format:{k}": v.description for k, v in registry.formats.items()},
                    **{f"backend:{k}": v.description for k, v in registry.backends.items()},
                    **{f"callback:{k}": v.description for k, v in registry.callbacks.items()}}
    for name, info in registry.info.items():
        console.print(f"[bold]{name}[/] {info.version} ({info.source})")
        console.print(f"  hooks: {', '.join(registry.hooks_of(name)) or 'none'}")
        for provided in registry.provided_by(name):
            console.print(f"  {provided}: {descriptions.get(provided, '')}")
