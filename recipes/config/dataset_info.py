"""LLaMA-Factory data sets as they are: an entry of a ``dataset_info.json`` -> a format, its options
and the files to read.

Users arrive with a ``data/`` folder and its ``dataset_info.json``; translating each entry by hand
into our format options is where mistakes creep in. ``resolve_dataset`` reads an entry the way
LLaMA-Factory does (``formatting``, ``columns``, ``tags``, ``file_name`` as a file or folder) and maps
it onto the built-in ``alpaca``, ``sharegpt`` and ``text`` formats, whose option names are
LLaMA-Factory's; preference data (``ranking: true``: ``chosen``/``rejected`` columns) onto the
``sharegpt_preference`` and ``alpaca_preference`` formats and KTO data (a ``kto_tag`` column) onto
``sharegpt_kto`` and ``alpaca_kto``, which the recipes-trl plugin provides with the same option
names. What we cannot honour is refused with a message that says why and what to do, never dropped:
hub data sets (nothing is downloaded here), images and other media, sampling. Pure Python:
``recipes validate`` may call it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from recipes.errors import Problem, RecipeError

HUB_KEYS = {"hf_hub_url": "the Hugging Face hub", "ms_hub_url": "ModelScope", "om_hub_url": "Modelers (openmind)"}
KNOWN_KEYS = ("file_name", "formatting", "columns", "tags", "ranking", "split", "subset", "folder", "num_samples",
              "file_sha1", "script_url", "cloud_file_name", *HUB_KEYS)
ALPACA_COLUMNS = ("prompt", "query", "response", "history", "system", "tools")
SHAREGPT_COLUMNS = ("messages", "system", "tools")
RANKING_COLUMNS = ("chosen", "rejected")  # preference pairs (ranking: true)
KTO_COLUMNS = ("kto_tag",)  # a desirable/undesirable label per example
SHAREGPT_TAGS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag",
                 "system_tag")
UNSUPPORTED_COLUMNS = {"images": "images", "videos": "videos", "audios": "audio", "loss_weight": None}


@dataclass(frozen=True)
class ResolvedDataset:
    """What a data source needs: the format to read ``files`` with and that format's options (a dict
    for its ``options_model``)."""

    entry: str
    format_name: str  # text, alpaca, sharegpt; or a preference format of the recipes-trl plugin
    options: dict
    files: list[Path]
    yields: str  # documents, conversations, preferences or unpaired_preferences


def resolve_dataset(info_path: Path, entry: str) -> ResolvedDataset:
    """The entry ``entry`` of the LLaMA-Factory index ``info_path``, resolved to local files.

    Raises ``RecipeError`` naming ``info_path`` and the entry for anything it cannot load."""
    info_path = Path(info_path)
    index = _read_index(info_path)
    if entry not in index:
        from recipes.config.schema import did_you_mean

        raise RecipeError(Problem(f"no data set {entry!r} here; {did_you_mean(entry, sorted(index))}",
                                  file=str(info_path)))
    attrs = index[entry]
    where = f"{info_path}: data set {entry!r}"
    if not isinstance(attrs, dict):
        raise RecipeError(f"{where}: expected an object, got {type(attrs).__name__}")
    _check_keys(attrs, where)
    if "file_name" not in attrs:
        raise RecipeError(f"{where}: {_why_not_local(attrs)}")
    _refuse_unsupported(attrs, where)
    files = _files(info_path.parent / _string(attrs, "file_name", where), where)
    if attrs.get("file_sha1"):
        _check_sha1(files, attrs["file_sha1"], where)
    columns = _mapping(attrs, "columns", where)
    tags = _mapping(attrs, "tags", where)
    formatting = attrs.get("formatting", "alpaca")
    # the preference columns a ranking entry must and a KTO entry may name; LLaMA-Factory's defaults otherwise
    extra, flavour, yields = (), "", "conversations"
    if attrs.get("ranking"):
        extra, flavour, yields = RANKING_COLUMNS, "_preference", "preferences"
    elif "kto_tag" in columns:
        extra, flavour, yields = KTO_COLUMNS, "_kto", "unpaired_preferences"
    if formatting == "sharegpt":
        _only(columns, SHAREGPT_COLUMNS + extra, "columns", where)
        _only(tags, SHAREGPT_TAGS, "tags", where)
        return ResolvedDataset(entry, "sharegpt" + flavour, {**columns, **tags}, files, yields)
    if formatting != "alpaca":
        raise RecipeError(f"{where}: formatting {formatting!r} is not supported; use \"alpaca\" or \"sharegpt\"")
    if tags:
        raise RecipeError(f"{where}: 'tags' apply to sharegpt data; this entry's formatting is alpaca")
    _only(columns, ALPACA_COLUMNS + extra, "columns", where)
    if set(columns) == {"prompt"} and not flavour:  # LLaMA-Factory's pre-training corpora: one text column
        return ResolvedDataset(entry, "text", {"text_field": columns["prompt"]}, files, "documents")
    return ResolvedDataset(entry, "alpaca" + flavour, columns, files, yields)


def _read_index(info_path: Path) -> dict:
    try:
        text = info_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(Problem(f"cannot read the data set index: {exc.strerror}", file=str(info_path))) from exc
    try:
        index = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecipeError(Problem(f"not valid JSON: {exc.msg} (column {exc.colno})", file=str(info_path),
                                  line=exc.lineno)) from exc
    if not isinstance(index, dict):
        raise RecipeError(Problem("expected a JSON object of data sets by name", file=str(info_path)))
    return index


def _check_keys(attrs: dict, where: str) -> None:
    from recipes.config.schema import did_you_mean

    for key in attrs:
        if key not in KNOWN_KEYS:
            raise RecipeError(f"{where}: unknown key {key!r}; {did_you_mean(key, list(KNOWN_KEYS))}")


def _why_not_local(attrs: dict) -> str:
    for key, hub in HUB_KEYS.items():
        if attrs.get(key):
            return (f"it is on {hub} ({key} = {attrs[key]!r}), and recipes loads no data from the network. "
                    f"Download the data set's files (for the Hugging Face hub: `hf download {attrs[key]} "
                    "--repo-type dataset --local-dir DIR`), then add \"file_name\" (a file or folder, relative to "
                    "this dataset_info.json) to the entry, or point the recipe's data source at the files")
    if attrs.get("script_url"):
        return (f"it is built by a loading script ({attrs['script_url']!r}), which recipes does not run; "
                "run the script once to write JSON or Parquet files and set \"file_name\" to them")
    if attrs.get("cloud_file_name"):
        return "it is in cloud storage (cloud_file_name); download it and set \"file_name\""
    return "it has no \"file_name\": set it to the data file or folder, relative to this dataset_info.json"


def _refuse_unsupported(attrs: dict, where: str) -> None:
    for key in ("subset", "folder"):
        if attrs.get(key):
            raise RecipeError(f"{where}: {key!r} selects part of a hub data set; with a local file_name, point "
                              "file_name at that part instead")
    if attrs.get("split", "train") != "train":
        raise RecipeError(f"{where}: split {attrs['split']!r}: a local file has only the \"train\" split; "
                          "point file_name at the file that holds that split")
    if attrs.get("num_samples") is not None:
        raise RecipeError(f"{where}: num_samples is not supported; write the records you want to a file")
    for column in _mapping(attrs, "columns", where):
        if column in UNSUPPORTED_COLUMNS:
            what = UNSUPPORTED_COLUMNS[column]
            raise RecipeError(f"{where}: the column {column!r} is not supported"
                              + (f" (recipes trains on text, not {what})" if what else
                                 "; use the messages format, whose messages may carry loss_weight"))


def _files(path: Path, where: str) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():  # as LLaMA-Factory: the files directly in the folder
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if files:
            return files
        raise RecipeError(f"{where}: the folder {path} holds no file")
    raise RecipeError(f"{where}: file_name {str(path)!r} does not exist")


def _check_sha1(files: list[Path], expected: str, where: str) -> None:
    if len(files) == 1:
        actual = hashlib.sha1(files[0].read_bytes()).hexdigest()
        if actual != expected:
            raise RecipeError(f"{where}: {files[0]} has sha1 {actual}, but file_sha1 says {expected}: "
                              "the file changed; update or remove file_sha1")


def _string(attrs: dict, key: str, where: str) -> str:
    value = attrs[key]
    if not isinstance(value, str) or not value:
        raise RecipeError(f"{where}: {key!r} must be a non-empty string")
    return value


def _mapping(attrs: dict, key: str, where: str) -> dict[str, str]:
    value = attrs.get(key) or {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise RecipeError(f"{where}: {key!r} must be an object of names (strings)")
    return value


def _only(given: dict, allowed: tuple, key: str, where: str) -> None:
    from recipes.config.schema import did_you_mean

    for name in given:
        if name not in allowed:
            raise RecipeError(f"{where}: {key} {name!r} is not one this formatting reads; "
                              f"{did_you_mean(name, list(allowed))}")
