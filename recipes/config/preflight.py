"""Checks that read more than the recipe, run by `recipes validate` and at the start of `recipes run`
(before any stage trains): every stage's data read through its format plugin, and the model folder
holding a tokenizer. A broken line in the last stage's file is found before the first stage spends
hours training. No torch, no transformers.

Data: where a source's files are small (under ``FULL_PASS_BYTES`` in all) every record is read;
where they are big, the first ``SAMPLE_RECORDS`` records of each file (the structure: columns,
JSON, roles), so that validate stays quick on a 10 GB corpus; a format with a ``check_file`` (one
that converts documents) is given each file to look at instead. A file that gives no record at all
(empty, or only blank lines) is an error naming it.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from pydantic import ValidationError

from recipes.config.collector import Collector
from recipes.config.loaded import BUNDLED_PREFIX, LoadedRecipe
from recipes.config.model_info import hf_cache_file, is_hub_id, local_model_folder
from recipes.errors import Problem, RecipeError

FULL_PASS_BYTES = 20 << 20
SAMPLE_RECORDS = 1000
# A tokenizer is one of these (transformers builds an empty one from config.json alone otherwise)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "qwen.tiktoken")


def preflight(loaded: LoadedRecipe, registry, problems: Collector, warn_uncached: bool = True) -> None:
    _check_tokenizer(loaded, problems, warn_uncached)
    _check_data(loaded, registry, problems)


def model_folder(loaded: LoadedRecipe) -> Path | None:
    """The local folder of the recipe's model: a folder, or a hub id's snapshot in the HF cache;
    None for a bundled model or a hub id not in the cache."""
    model = loaded.recipe.model
    if model.path.startswith(BUNDLED_PREFIX):
        return None
    folder = local_model_folder(model.path, loaded.path.resolve().parent)
    if folder is not None:
        return folder
    config = hf_cache_file(model.path, "config.json", model.revision)
    return config.parent if config is not None else None


def tokenizer_missing(folder: Path) -> str | None:
    """Why ``folder`` cannot give a tokenizer, or None."""
    if any((folder / name).is_file() for name in TOKENIZER_FILES) or any(folder.glob("*.tiktoken")):
        return None
    return (f"{folder} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}): copy the tokenizer "
            "files of the model into it (a model folder from `save_pretrained` of the model alone lacks them)")


def _check_tokenizer(loaded: LoadedRecipe, problems: Collector, warn_uncached: bool) -> None:
    model = loaded.recipe.model
    if model.path.startswith(BUNDLED_PREFIX):
        return
    folder = model_folder(loaded)
    if folder is None:
        if warn_uncached and is_hub_id(model.path):
            problems.warn(("model", "path"), f"{model.path!r} is not in the local HF cache: `recipes run` will stop "
                          f"at the start; download it first (`hf download {model.path}`)")
        return
    if (folder / "config.json").is_file():
        why = tokenizer_missing(folder)
        if why:
            problems.add(("model", "path"), why)


def _check_data(loaded: LoadedRecipe, registry, problems: Collector) -> None:
    """Every source read through its format, under the stage's ``on_bad_record`` policy (skipped
    records are counted and said, as preparing the data will skip them)."""
    from recipes.bad_records import BadRecords, policy

    recipe = loaded.recipe
    for (index, group, source_index), resolved in sorted(loaded.sources.items(), key=lambda item: item[0]):
        fmt = registry.formats.get(resolved.format)
        if fmt is None:
            continue
        try:
            options = fmt.options_model(**resolved.options)
        except ValidationError:
            continue  # already reported against the recipe
        at = ("stages", index, group, source_index, "path")
        full = sum(f.stat().st_size for f in resolved.files if f.is_file()) < FULL_PASS_BYTES
        s = recipe.stages[index].settings(recipe.defaults)
        bad, read = BadRecords(s.on_bad_record == "skip", s.max_bad_records), 0
        for path in resolved.files:
            try:
                with policy(bad):
                    skipped_before = bad.count
                    count = _records_in(fmt, Path(path), options, full)
                read += count
                if not count and bad.count == skipped_before:
                    problems.add(at, f"{path}: no records in this file (empty, or only blank lines); remove it "
                                 "from the data or fix it")
                    break
            except RecipeError as exc:
                for problem in exc.problems:
                    problems.problems.append(problem if isinstance(problem, Problem) else Problem(str(problem)))
                break
            except (ValueError, OSError, KeyError, TypeError) as exc:
                problems.add(at, f"{path}: cannot be read as {resolved.format!r}: {type(exc).__name__}: {exc}")
                break
        else:
            try:
                bad.check_share(read + bad.count)
            except RecipeError as exc:
                problems.add(at, str(exc))
                continue
            if bad.count:
                problems.warn(at, f"on_bad_record = \"skip\": {bad.describe()}"
                              + ("" if full else f" in the first {SAMPLE_RECORDS} records of each file"))


def _records_in(fmt, path: Path, options, full: bool) -> int:
    """The records of one file that validate reads (all, or the first ``SAMPLE_RECORDS``); a format
    with a quick ``check_file`` (converting documents is slow) is looked at instead, as one record."""
    if fmt.check_file is not None:
        from recipes.bad_records import skipped

        before = skipped()
        fmt.check_file(path, options)
        return int(skipped() == before)
    records = fmt.read(path, options)
    try:
        return sum(1 for _ in (records if full else itertools.islice(records, SAMPLE_RECORDS)))
    finally:
        close = getattr(records, "close", None)
        if close is not None:
            close()
