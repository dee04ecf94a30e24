"""TOML text -> a validated ``Recipe``, with every problem located (file, line, dotted field).

Checks, all reported at once: TOML syntax; types, ranges and unknown keys (pydantic, with "did you
mean"); stage names and bases; formats, backends and callbacks known to the loaded plugins, with
each provider's own options model; data paths that match files; the model folder, where local.
No torch, no transformers.
"""

from __future__ import annotations

import glob
import re
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError

from recipes.errors import Problem, RecipeError
from recipes.plugins import Registry, get_registry
from recipes.schema import MODEL_REF, Recipe, did_you_mean
from recipes.toml_lines import line_of, locate

BUNDLED_PREFIX = "bundled:"


@dataclass
class LoadedRecipe:
    recipe: Recipe
    path: Path
    lines: dict
    data_files: dict  # (stage index, source index) -> list[Path]

    @property
    def name(self) -> str:
        return self.recipe.name or self.path.stem


def find_recipe(name_or_path: str) -> Path:
    """A path to a recipe file, or the name of a bundled recipe (with or without .toml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    from qwen_recipes import bundled_recipes

    bundled = bundled_recipes()
    stem = path.name[:-5] if path.name.endswith(".toml") else path.name
    if path.parent == Path(".") and stem in bundled:
        return bundled[stem]
    if path.exists():
        raise RecipeError(f"{name_or_path}: not a file; give a recipe file (.toml) or a bundled recipe name")
    raise RecipeError(f"{name_or_path}: no such file, nor a bundled recipe; "
                      f"{did_you_mean(stem, sorted(bundled))} (see `recipes list`)")


def resolve_data_path(spec: str, base_dir: Path) -> str:
    if spec.startswith(BUNDLED_PREFIX):
        from qwen_recipes import DATA_DIR

        return str(DATA_DIR / spec[len(BUNDLED_PREFIX):])
    path = Path(spec).expanduser()
    return str(path if path.is_absolute() else base_dir / path)


def match_files(pattern: str) -> list[Path]:
    """Files named by a path, a folder (every file under it) or a glob, sorted."""
    path = Path(pattern)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    return sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())


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


def dotted(path: tuple) -> str:
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


class _Collector:
    def __init__(self, file: Path, lines: dict):
        self.file, self.lines, self.problems = str(file), lines, []

    def add(self, path: tuple, message: str) -> None:
        self.problems.append(Problem(message, self.file, line_of(self.lines, path), dotted(path) or None))

    def add_validation(self, exc: ValidationError, data) -> None:
        for error in exc.errors():
            path = _data_path(data, tuple(error["loc"]))
            if error["type"] == "extra_forbidden":
                model = _model_at(path)
                known = sorted(model.model_fields) if model else []
                hint = did_you_mean(str(path[-1]), known) if known else "remove it"
                self.add(path, f"unknown key {path[-1]!r}; {hint}")
            elif error["type"] == "missing":
                self.add(path, f"required key {error['loc'][-1]!r} is missing")
            else:
                self.add(path, f"{error['msg']} (got {_short(error.get('input'))})")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_recipe(name_or_path: str, registry: Registry | None = None) -> LoadedRecipe:
    """Read, parse and check a recipe. Raises RecipeError listing every problem found."""
    path = find_recipe(name_or_path)
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        line = int(found.group(1)) if found else None
        where = f" (column {found.group(2)})" if found else ""
        raise RecipeError(Problem(f"TOML syntax error: {message}{where}", str(path), line)) from None
    lines = locate(text)
    problems = _Collector(path, lines)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        problems.add_validation(exc, data)
        recipe = _without_bad_keys(data, exc)  # to find the other mistakes too, all at once
    loaded = LoadedRecipe(recipe, path, lines, {}) if recipe is not None else None
    if loaded is not None:
        check(loaded, registry or get_registry(), problems)
    if problems.problems:
        raise RecipeError(sorted(problems.problems, key=lambda p: p.line or 0))
    return loaded


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


def check(loaded: LoadedRecipe, registry: Registry, problems: _Collector) -> None:
    """Cross-field and plugin checks on a recipe that passed the pydantic models."""
    recipe, base_dir = loaded.recipe, loaded.path.resolve().parent

    # the model
    model_path = recipe.model.path
    if model_path.startswith(BUNDLED_PREFIX):
        from qwen_recipes import BUNDLED_MODELS

        name = model_path[len(BUNDLED_PREFIX):]
        if name not in BUNDLED_MODELS:
            problems.add(("model", "path"), f"unknown bundled model {name!r}; "
                         f"{did_you_mean(name, sorted(BUNDLED_MODELS))}")
    elif model_path.startswith((".", "/", "~")) or (base_dir / model_path).exists():
        folder = Path(resolve_data_path(model_path, base_dir))
        if not (folder / "config.json").is_file():
            problems.add(("model", "path"), f"{folder} is not a model folder (no config.json); give a "
                         "local HF model folder or a hub id")

    # quantization backend and its options
    if recipe.quantization is not None:
        backend = registry.backends.get(recipe.quantization.backend)
        if backend is None:
            problems.add(("quantization", "backend"), f"unknown quantization backend "
                         f"{recipe.quantization.backend!r}; {did_you_mean(recipe.quantization.backend, sorted(registry.backends))}")
        else:
            _check_options(backend.options_model, recipe.quantization.options(), ("quantization",), problems,
                           flat=True)

    # callbacks
    for index, name in enumerate(recipe.callbacks or []):
        if name not in registry.callbacks:
            problems.add(("callbacks", index), f"unknown callback {name!r}; "
                         f"{did_you_mean(name, sorted(registry.callbacks))}")

    # stages
    seen: list[str] = []
    for index, stage in enumerate(recipe.stages):
        where = ("stages", index)
        if stage.name in seen:
            problems.add(where + ("name",), f"stage name {stage.name!r} is used twice; give each stage its own name")
        if stage.base is not None and stage.base != MODEL_REF and stage.base not in seen:
            later = [s.name for s in recipe.stages[index + 1:]]
            if stage.base == stage.name:
                hint = "a stage cannot start from itself; name an earlier stage or \"model\""
            elif stage.base in later:
                hint = "it comes later in the plan; a stage can only start from an earlier one"
            else:
                hint = did_you_mean(stage.base, [MODEL_REF, *seen])
            problems.add(where + ("base",), f"base {stage.base!r} is not an earlier stage: {hint}")
        seen.append(stage.name)
        wanted = "documents" if stage.kind == "pretrain" else "conversations"
        for source_index, source in enumerate(stage.data):
            at = where + ("data", source_index)
            fmt = registry.formats.get(source.format)
            if fmt is None:
                problems.add(at + ("format",), f"unknown data format {source.format!r}; "
                             f"{did_you_mean(source.format, sorted(registry.formats))}")
            else:
                if fmt.yields != wanted:
                    problems.add(at + ("format",), f"format {source.format!r} gives {fmt.yields}, but a "
                                 f"{stage.kind} stage trains on {wanted}; pick a format that gives {wanted}")
                _check_options(fmt.options_model, source.options, at + ("options",), problems)
            pattern = resolve_data_path(source.path, base_dir)
            files = match_files(pattern)
            if not files:
                problems.add(at + ("path",), f"{source.path!r} matches no file (looked for {pattern})")
            loaded.data_files[(index, source_index)] = files


def _check_options(model: type[BaseModel], options: dict, where: tuple, problems: _Collector,
                   flat: bool = False) -> None:
    try:
        model.model_validate(options)
    except ValidationError as exc:
        for error in exc.errors():
            key = error["loc"][0] if error["loc"] else None
            path = where + ((key,) if key is not None else ())
            if error["type"] == "extra_forbidden":
                known = sorted(model.model_fields) + (["backend"] if flat else [])
                problems.add(path, f"unknown option {key!r}; " + (did_you_mean(str(key), known) if known
                                                                  else "this takes no options"))
            else:
                problems.add(path, f"{error['msg']} (got {_short(error.get('input'))})")
