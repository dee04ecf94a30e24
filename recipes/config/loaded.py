"""A loaded recipe and where its data sources point: what the checks read and the plan is built from.
No torch."""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

from recipes.config.model_info import BUNDLED_PREFIX, ModelInfo
from recipes.config.schema import Recipe


@dataclass
class ResolvedSource:
    """A data source as it will be read: format name, options (a dict for the format's model), files."""

    format: str
    options: dict
    files: list[Path]


SOURCE_GROUPS = ("data", "eval_data")


@dataclass
class LoadedRecipe:
    recipe: Recipe
    path: Path
    lines: dict
    sources: dict  # (stage index, "data" | "eval_data", source index) -> ResolvedSource
    model: ModelInfo | None = None  # from config.json, where it can be read without a download
    warnings: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.recipe.name or self.path.stem


def resolve_data_path(spec: str, base_dir: Path) -> str:
    if spec.startswith(BUNDLED_PREFIX):
        from recipes.family import family

        return str(family().data_dir / spec[len(BUNDLED_PREFIX):])
    path = Path(spec).expanduser()
    return str(path if path.is_absolute() else base_dir / path)


def match_files(pattern: str, suffixes: tuple[str, ...] = ()) -> list[Path]:
    """Files named by a path, a folder (every file under it, hidden ones aside) or a glob, sorted. With
    ``suffixes`` (the ones a format reads), a folder or glob gives only the files that end in one of
    them (case aside); a file named alone is given as it is, for its format to accept or refuse."""
    path = Path(pattern)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    else:
        found = [Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file()]
    return sorted(p for p in found if not suffixes or p.name.lower().endswith(suffixes))


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
