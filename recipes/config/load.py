"""TOML text -> a validated ``Recipe``, with every problem located (file, line, column, dotted field).

Here: finding the file, TOML syntax, and the pydantic models (types, ranges, unknown keys with "did
you mean"). The cross-field and plugin checks are in ``recipes.config.checks``. All problems are reported
at once, in line order. No torch, no transformers.
"""

from __future__ import annotations

import re
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError

from recipes.config.collector import Collector
from recipes.errors import Problem, RecipeError
from recipes.config.loaded import LoadedRecipe, short
from recipes.plugins.registry import Registry, get_registry
from recipes.config.schema import Recipe, did_you_mean
from recipes.config.toml_lines import locate


def find_recipe(name_or_path: str) -> Path:
    """A path to a recipe file, or the name of a bundled recipe (with or without .toml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    from recipes.family import family

    bundled = family().bundled_recipes()
    stem = path.name[:-5] if path.name.endswith(".toml") else path.name
    if path.parent == Path(".") and stem in bundled:
        return bundled[stem]
    if path.exists():
        raise RecipeError(f"{name_or_path}: not a file; give a recipe file (.toml) or a bundled recipe name")
    raise RecipeError(f"{name_or_path}: no such file, nor a bundled recipe; "
                      f"{did_you_mean(stem, sorted(bundled))} (see `recipes list`)")


def _model_at(path: tuple) -> type[BaseModel] | None:
    """The pydantic model that holds the last key of ``path`` (for "did you mean")."""
    model: type[BaseModel] | None = Recipe
    for key in path[:-1]:
        if isinstance(key, int) or model is None:
            continue
        field = model.model_fields.get(key)
        if field is None:
            return None
        model = _inner_model(field.annotation)
    return model


def _inner_model(annotation):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _data_path(data, loc: tuple) -> tuple:
    """The longest prefix of a pydantic ``loc`` that exists in the data (drops union branch names)."""
    out: tuple = ()
    node = data
    for key in loc:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            if isinstance(node, dict) and isinstance(key, str) and not key.startswith(("function-", "list[", "str")):
                out += (key,)  # a missing field: keep its name
            break
        out += (key,)
    return out


@dataclass
class Checked:
    """The outcome of checking one recipe: the loaded recipe (None when it could not be built),
    its errors and its warnings (legal but likely wrong settings), each in line order."""

    name: str
    loaded: LoadedRecipe | None
    problems: list[Problem]
    warnings: list[Problem]


def check_recipe(name_or_path: str, registry: Registry | None = None, preflight: bool | str = False) -> Checked:
    """Read, parse and check a recipe; every problem is collected, none raised. With ``preflight``
    (validate; ``"run"`` at the start of a run, where resolving the model says the rest) also read every
    stage's data and look for the tokenizer (recipes.config.preflight)."""
    try:
        path = find_recipe(name_or_path)
    except RecipeError as exc:
        return Checked(name_or_path, None, exc.problems, [])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        return Checked(str(path), None, [Problem(f"not UTF-8 text (byte {exc.start}): a recipe is a TOML text "
                                                 "file; save it as UTF-8", str(path), line)], [])
    except OSError as exc:
        return Checked(str(path), None, [Problem(f"cannot read it: {exc.strerror}", str(path))], [])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        line, column = (int(found.group(1)), int(found.group(2))) if found else (None, None)
        message = _name_the_key(message, text, line)
        return Checked(str(path), None, [Problem(f"TOML syntax error: {message}", str(path), line, None, column)], [])
    lines = locate(text)
    collector = Collector(path, lines)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        _add_validation(collector, exc, data)
        recipe = _without_bad_keys(data, exc)  # to find the other mistakes too, all at once
    loaded = LoadedRecipe(recipe, path, lines, {}) if recipe is not None else None
    if loaded is None:
        from recipes.config.checks import check_raw_formats

        check_raw_formats(data, registry or get_registry(), collector)
    if loaded is not None:
        from recipes.config.checks import check

        check(loaded, registry or get_registry(), collector)
        if preflight and not collector.problems:
            from recipes.config.preflight import preflight as read_ahead

            read_ahead(loaded, registry or get_registry(), collector, warn_uncached=preflight != "run")
        loaded.warnings = Collector.in_order(collector.warnings)
    return Checked(str(path), loaded, Collector.in_order(collector.problems), Collector.in_order(collector.warnings))


def _name_the_key(message: str, text: str, line: int | None) -> str:
    """tomllib's "Cannot overwrite a value" says neither which key nor where it was first set."""
    if message.startswith("Cannot declare"):
        return f"{message}: that table header appears twice; merge them into one"
    if line is None or not message.startswith("Cannot overwrite"):
        return message
    source = text.splitlines()[line - 1] if line <= len(text.splitlines()) else ""
    key = re.match(r"\s*([^=\s]+)\s*=", source)
    if not key:
        return message
    return f"{message}: {key.group(1).strip()!r} is set twice; keep one of them"


def load_recipe(name_or_path: str, registry: Registry | None = None, strict: bool = False,
                preflight: bool | str = False) -> LoadedRecipe:
    """A checked recipe. Raises RecipeError listing every problem found (and, with ``strict``, every
    warning)."""
    checked = check_recipe(name_or_path, registry, preflight)
    problems = checked.problems + (checked.warnings if strict else [])
    if problems:
        raise RecipeError(Collector.in_order(problems))
    return checked.loaded


def _add_validation(collector: Collector, exc: ValidationError, data) -> None:
    for error in exc.errors():
        path = _data_path(data, tuple(error["loc"]))
        if error["type"] == "extra_forbidden":
            model = _model_at(path)
            known = sorted(model.model_fields) if model else []
            hint = did_you_mean(str(path[-1]), known) if known else "remove it"
            if len(path) > 1 and path[-1] in Recipe.model_fields and model is not Recipe:
                hint = (f"{path[-1]!r} is a top-level key: move it to the top of the file, before the first "
                        "table header (in TOML a key belongs to the table above it)")
            collector.add(path, f"unknown key {path[-1]!r}; {hint}")
        elif error["type"] == "missing":
            collector.add(path, f"required key {error['loc'][-1]!r} is missing")
        else:
            collector.add(path, f"{error['msg']} (got {short(error.get('input'))})")


def _without_bad_keys(data: dict, exc: ValidationError, tries: int = 5) -> Recipe | None:
    """The recipe with every key that failed validation removed (so it takes its default), for the
    cross-field checks; None when that still does not validate (a required key is missing)."""
    import copy

    data = copy.deepcopy(data)
    for _ in range(tries):
        for error in exc.errors():
            path = _data_path(data, tuple(error["loc"]))
            if error["type"] == "missing" or not path:
                return None
            parent = data
            for key in path[:-1]:
                parent = parent[key]
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                return None
        try:
            return Recipe.model_validate(data)
        except ValidationError as again:
            exc = again
    return None


