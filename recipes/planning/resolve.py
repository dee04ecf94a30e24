"""Where the recipe's model lives on this machine: a bundled model (built on first use), a local
folder, or a hub id's snapshot in the local HF cache. Nothing is downloaded implicitly: a 7B
checkpoint is a download the user starts on purpose."""

from __future__ import annotations

from pathlib import Path

from recipes.errors import RecipeError


def resolve_model(path: str, revision: str | None, console, recipe_path=None, native: bool = True) -> str:
    """The folder of the recipe's model; with ``native``, the family's native conversion of it where
    it has one (Qwen v1 -> Qwen2, made once and cached)."""
    from recipes.family import family

    if path.startswith("bundled:"):
        return str(family().bundled_models[path.removeprefix("bundled:")].path(console))
    if Path(path).is_dir():
        folder = path
    else:
        folder = _cached_snapshot(path, revision, recipe_path)
    convert = family().native_model if native else None
    converted = convert(Path(folder), console) if convert is not None else None
    return str(converted) if converted is not None else folder


def _cached_snapshot(path: str, revision: str | None, recipe_path) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return snapshot_download(path, revision=revision, local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError, OSError) as exc:
        raise RecipeError(f"{recipe_path}: model.path: {path!r} is neither a local model folder nor in the local HF cache "
                          f"({type(exc).__name__}); download it first (`hf download {path}`) or give a local "
                          "folder") from None
