"""Which recipe a run folder belongs to. The manifest records the recipe (its name and file) that runs
in the folder; a recipe of another name run into it is refused, so that one recipe's stages are
never silently replaced by another's stages of the same name. ``recipes run --force`` takes the
folder over (its stages are trained again where their inputs differ, as for any change).

The name is the identity: a recipe edited, copied or moved keeps its run under the same name (the
file it was run from last is recorded, for the reader). A folder from before the manifest recorded
its recipe is taken as the recipe's own.
"""

from __future__ import annotations

from pathlib import Path

from recipes.errors import RecipeError
from recipes.run.manifest import MANIFEST_NAME, Manifest


def recipe_identity(plan) -> dict:
    return {"name": plan.name, "path": str(Path(plan.recipe_path).resolve())}


def claim(plan, force: bool = False) -> None:
    """Refuse another recipe's run into ``plan.run_dir`` (unless ``force``); record this recipe in
    the folder's manifest otherwise. Nothing in the folder changes when it is refused."""
    if not (plan.run_dir / MANIFEST_NAME).is_file():
        return  # a new folder: the manifest records the recipe when the run writes it
    manifest = Manifest.load(plan.run_dir)
    mine, recorded = recipe_identity(plan), manifest.data.get("recipe")
    if recorded and recorded.get("name") != mine["name"] and not force:
        raise RecipeError(f"run folder {plan.run_dir} holds the run of recipe {recorded.get('name')!r} "
                          f"({recorded.get('path')}), not of {mine['name']!r} ({mine['path']}): give this run "
                          "its own folder (-o DIR, or output_dir in the recipe), or --force to take this one over")
    manifest.record_recipe(mine)
