"""`recipes list`, `recipes cp`, `recipes plugins`: what is installed."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from recipes.errors import RecipeError
from recipes.cli.common import main, _console, friendly


@main.command(name="list")
def list_recipes():
    """List the bundled recipes."""
    import tomllib

    from recipes.family import family

    console = _console()
    bundled = family().bundled_recipes()
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
    from recipes.config.schema import did_you_mean
    from recipes.family import family

    bundled = family().bundled_recipes()
    stem = name[:-5] if name.endswith(".toml") else name
    if stem not in bundled:
        raise RecipeError(f"{name}: no bundled recipe of that name; {did_you_mean(stem, sorted(bundled))}")
    target = destination / f"{stem}.toml" if destination.is_dir() else destination
    if target.exists():
        raise RecipeError(f"{target}: already exists; give another path or remove it first")
    if not target.parent.is_dir():
        raise RecipeError(f"{target}: the folder {target.parent} does not exist; create it first or give another path")
    try:
        shutil.copyfile(bundled[stem], target)
    except OSError as exc:
        raise RecipeError(f"{target}: cannot write it ({exc.strerror}); give another path") from None
    _console().print(f"copied {stem} to {target}")


@main.command()
@friendly
def plugins():
    """List the loaded plugins, their versions, the hooks each implements and what it provides."""
    from recipes.plugins.registry import get_registry

    registry = get_registry()
    console = _console()
    descriptions = {**{f"format:{k}": v.description for k, v in registry.formats.items()},
                    **{f"backend:{k}": v.description for k, v in registry.backends.items()},
                    **{f"callback:{k}": v.description for k, v in registry.callbacks.items()},
                    **{f"loss:{k}": v.description for k, v in registry.losses.items()},
                    **{f"exporter:{k}": v.description for k, v in registry.exporters.items()},
                    **{f"scorer:{k}": v.description for k, v in registry.scorers.items()},
                    **{f"kind:{k}": v.description for k, v in registry.kinds.items()},
                    **{f"filter:{k}": v.description for k, v in registry.filters.items()}}
    for name, info in registry.info.items():
        console.print(f"[bold]{name}[/] {info.version} ({info.source})")
        console.print(f"  hooks: {', '.join(registry.hooks_of(name)) or 'none'}")
        for provided in registry.provided_by(name):
            console.print(f"  {provided}: {descriptions.get(provided, '')}")
