"""A stage's training and evaluation sets, from the token store: records read through the format
plugins, tokenized in parallel into memory-mapped shards (or taken from a store prepared earlier,
e.g. by `recipes prepare` on a machine without a GPU), a held-out share split off (``val_size``),
extra evaluation sets (``eval_data``), and SFT examples packed (``packing``), the split and the rows
computed once and stored as index arrays.

The store lives in ``$RECIPES_CACHE/store`` (default ``~/.cache/qwen-recipes``), one folder per key;
the key covers everything that decides the tokens: the data files' contents, formats, their options
and the version of the plugin providing each, the tokenizer (its serialized vocabulary and merges)
and chat template, the stage kind, ``cutoff_len`` (SFT; pre-training blocks are cut when read),
``overlong_examples``, ``on_bad_record`` and its limit, and the versions of recipes and of the store.
Data only (numpy ``.npy``, JSON): nothing is unpickled. See ``recipes.data.store``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from recipes.data.tokenization import DataStats
from recipes.plugins.hookspecs import RECORDS_FOR_KIND
from recipes.errors import RecipeError
from recipes.hashing import digest, file_sha256


@dataclass
class StageData:
    train: object  # a map-style Dataset reading the store (recipes.data.layout)
    evals: dict = field(default_factory=dict)  # set name -> Dataset
    stats: DataStats = field(default_factory=DataStats)
    packing: object = None  # PackingStats, when packed
    cached: bool = False
    cache_key: str = ""
    store: object = None  # the TokenStore
    layout: Path | None = None  # its split and packing for this stage


def prepare(stage, tokenizer, say, workers: int | None = None) -> StageData:
    from recipes.data.layout import open_set
    from recipes.data.packing import PackingStats

    s = stage.settings
    kind = RECORDS_FOR_KIND[stage.kind]
    notes = ensure_chat_template(tokenizer) if kind == "conversations" else []
    identity = tokenizer_identity(tokenizer)
    store, info, key, cached = prepared_store(stage.sources, kind, tokenizer, identity, s, say, workers)
    say(f"data: {'from the prepared store' if cached else 'prepared into the store'} {store.folder} ({key[:12]})")
    stats = stats_of(store, info, notes)
    if not len(store):
        raise RecipeError(f"stage {stage.name!r}: the data gave no training example "
                          f"({stats.records} records, {stats.dropped} dropped)")
    layout, sets = stage_layout(store, s.val_size, s.seed, s.packing, stage.name, say)
    data = StageData(open_set(store, layout, "train", s.packing), {}, stats, None, cached, key, store, layout)
    if s.val_size:
        data.evals["val"] = open_set(store, layout, "val", s.packing)
    for index, source in enumerate(stage.eval_sources):
        fmt, options, files = source
        name = Path(files[0]).stem if len(files) == 1 else f"eval{index}"
        extra, _, _, _ = prepared_store([source], fmt.yields, tokenizer, identity, s, say, workers)
        folder, _ = stage_layout(extra, 0.0, s.seed, s.packing, stage.name, say)
        data.evals[name] = open_set(extra, folder, "train", s.packing)
    if s.packing:
        train = sets["train"]
        data.packing = PackingStats(train["examples"], train["rows"], train["tokens"], s.cutoff_len)
    return data


def ensure_chat_template(tokenizer) -> list[str]:
    """Set the model family's chat template (Qwen's ChatML) on a tokenizer without one (before its
    identity is taken)."""
    if getattr(tokenizer, "chat_template", None):
        return []
    from recipes.family import family

    tokenizer.chat_template = family().chat_template()
    return [f"the tokenizer had no chat template: using the {family().name} family's"]


def tokenizer_identity(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256((text + (tokenizer.chat_template or "")).encode()).hexdigest()


def format_version(fmt) -> str:
    """The version of the distribution that provides a format (its reader's top-level package)."""
    from importlib import metadata

    from recipes import __version__

    package = (getattr(fmt.read, "__module__", None) or "").split(".")[0]
    if package == "recipes":
        return f"recipes {__version__}"
    for name in metadata.packages_distributions().get(package, []):
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:  # pragma: no cover
            continue
    return f"{package} (no distribution)"


def store_key(sources, kind: str, identity: str, s) -> str:
    from recipes import __version__
    from recipes.data.store import STORE_VERSION

    return digest({
        "version": STORE_VERSION, "recipes": __version__, "kind": kind, "tokenizer": identity,
        "cutoff_len": s.cutoff_len if kind == "conversations" else None,
        "overlong": s.overlong_examples if kind == "conversations" else None,
        "bad_records": [s.on_bad_record, s.max_bad_records if s.on_bad_record == "skip" else None],
        "sources": [{"format": fmt.name, "provider": format_version(fmt), "options": options.model_dump(mode="json"),
                     "files": [file_sha256(f) for f in files]} for fmt, options, files in sources],
    })


def builds_here() -> bool:
    """Whether this process prepares (the first process of each node; a file lock keeps a shared cache
    folder from being built twice)."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


def prepared_store(sources, kind: str, tokenizer, identity: str, s, say, workers: int | None = None):
    """(TokenStore, store.json content, key, prepared earlier) for ``sources`` read as ``kind``."""
    from recipes.data.bad_records import BadRecords
    from recipes.data.build import build_store, default_workers, finish, locked, wait_for
    from recipes.data.progress import Progress
    from recipes.data.store import TokenStore
    from recipes.data.tokenization import document_separator

    key = store_key(sources, kind, identity, s)
    folder = store_root() / key
    marker = folder / "store.json"
    cached = marker.is_file()
    if not cached and builds_here():
        with locked(folder):
            cached = marker.is_file()
            if not cached:
                if kind == "documents":
                    settings = (document_separator(tokenizer),)
                else:
                    settings = (s.cutoff_len, s.overlong_examples)
                workers = workers or int(os.environ.get("RECIPES_DATA_WORKERS", "0")) or default_workers()
                total = sum(Path(f).stat().st_size for _, _, files in sources for f in files)
                progress = Progress(total, f"preparing {kind}")
                try:
                    info = build_store(folder, sources, kind, tokenizer, settings,
                                       BadRecords(s.on_bad_record == "skip", s.max_bad_records), workers, progress)
                finally:
                    progress.close()
                finish(folder, info)
                say("data: " + progress.summary(info))
    elif not cached:
        wait_for(marker, say)
        cached = True
    info = json.loads(marker.read_text())
    return TokenStore(folder, s.cutoff_len), info, key, cached


def stage_layout(store, val_size: float, seed: int, packing: bool, stage: str, say):
    """The stored split and packing of a store for these settings (built once); (folder, sets)."""
    from recipes.data.build import locked, wait_for
    from recipes.data.layout import build_layout, layout_dir

    folder = layout_dir(store.folder, val_size, seed, packing, store.cutoff_len, stage)
    marker = folder / "layout.json"
    if not marker.is_file():
        if builds_here():
            with locked(folder):
                if not marker.is_file():
                    build_layout(folder, store, val_size, seed, packing, stage)
        else:
            wait_for(marker, say)
    return folder, json.loads(marker.read_text())["sets"]


def stats_of(store, info: dict, notes: list[str]) -> DataStats:
    stats = DataStats(records=info["records"], examples=len(store), tokens=info["tokens"],
                      label_tokens=info["label_tokens"], truncated=info["truncated"], dropped=info["dropped"],
                      notes=list(notes), bad=info["bad"], bad_first=list(info["bad_first"]))
    if stats.bad:
        stats.notes.append(f"{stats.bad} bad records skipped (on_bad_record = \"skip\"); the first: "
                           + "; ".join(stats.bad_first))
    return stats


def store_root() -> Path:
    from recipes.cache import cache_root

    return cache_root() / "store"


def cache_dir() -> Path:
    """Where prepared data lives (the token store)."""
    return store_root()


def split(examples: list, val_size: float, seed: int, stage: str) -> tuple[list, list]:
    """Hold out ``val_size`` (a share below 1, or a count) of the examples, chosen with the seed (the
    in-memory form of ``recipes.data.layout.held_out``)."""
    count = int(val_size) if val_size >= 1 else round(len(examples) * val_size)
    if not 0 < count < len(examples):
        raise RecipeError(f"stage {stage!r}: val_size {val_size:g} holds out {count} of {len(examples)} examples; "
                          "set it so that both the training and the evaluation set keep at least one")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])
