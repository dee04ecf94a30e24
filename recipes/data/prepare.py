"""A stage's training and evaluation sets, from the token store: records read through the format
plugins, tokenized in parallel into memory-mapped shards (or taken from a store prepared earlier,
e.g. by `recipes prepare` on a machine without a GPU), a held-out share split off (``val_size``),
extra evaluation sets (``eval_data``), and SFT examples packed (``packing``), the split and the rows
computed once and stored as index arrays.

The store lives in ``$RECIPES_CACHE/store`` (default ``~/.cache/qwen-recipes``), one folder per key;
the key covers everything that decides the tokens: the data files' contents, formats, their options
and the version of the plugin providing each, the tokenizer (its serialized vocabulary and merges)
and chat template, the stage kind, ``cutoff_len`` (SFT; pre-training blocks are cut when read),
``overlong_examples``, ``on_bad_record`` and its limit, the versions of recipes and of the store, and
the source's cleaning (``recipes.data.cleaning``: its settings, the filters' names, options and
versions, the stage's built-in checks) with, where it deduplicates across sources, the keys of the
stage's earlier sources.
Data only (numpy ``.npy``, JSON): nothing is unpickled. See ``recipes.data.store``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from recipes.data.cleaning import cleaning_state, removal_lines, stage_cleaning
from recipes.data.tokenization import DataStats
from recipes.errors import RecipeError
from recipes.hashing import digest, file_sha256


@dataclass
class StageData:
    train: object  # a map-style Dataset reading the stores (recipes.data.layout)
    evals: dict = field(default_factory=dict)  # set name -> Dataset
    stats: DataStats = field(default_factory=DataStats)
    packing: object = None  # PackingStats, when packed
    cached: bool = False  # every source's store was prepared earlier
    cache_key: str = ""
    store: object = None  # the first source's TokenStore
    layout: Path | None = None  # the stage's sets, mix and packing
    stores: list = field(default_factory=list)  # a TokenStore per training source
    mix: list = field(default_factory=list)  # per source: name, weight, examples, tokens, share (layout.json)
    markers: list = field(default_factory=list)  # the files that say each store and layout it reads is complete


def prepare(stage, tokenizer, say, workers: int | None = None) -> StageData:
    """Each training source into its own store (prepared once), then the stage's layout over them:
    held-out sets, the mix, packed rows; and each ``eval_data`` source as an evaluation set."""
    from recipes.data.layout import open_set
    from recipes.data.packing import PackingStats

    s = stage.settings
    kind = stage.records
    notes = ensure_chat_template(tokenizer) if kind == "conversations" else []
    identity = tokenizer_identity(tokenizer)
    stores, infos, keys, hits = [], [], [], []
    with stage_work(stage.name) as work:
        corpus = {"work": work}  # the stage's corpus-scope filters, made once, by name
        for source, cleaning in zip(stage.sources, stage_cleaning(stage, say)):
            earlier = (list(keys), [store.folder for store in stores])
            store, info, key, cached = prepared_store([source], kind, tokenizer, identity, s, say, workers,
                                                      cleaning, earlier, corpus)
            named = f" {source.name!r}" if len(stage.sources) > 1 else ""
            say(store_line(source.name if named else None, store.folder, key, cached))
            for line in removal_lines(info):
                say(f"data{named}: {line}")
            if cached and cleaning is not None:  # a later source's corpus-scope filters may need its documents
                corpus.setdefault("ready", []).append((source, cleaning, store.folder))
            stores.append(store), infos.append(info), keys.append(key), hits.append(cached)
    stats = stats_of(infos, notes, sum(len(store) for store in stores))
    stats.removed = {source.name: info.get("removed", {}) for source, info in zip(stage.sources, infos)}
    if not sum(len(store) for store in stores):
        raise RecipeError(f"stage {stage.name!r}: the data gave no training example "
                          f"({stats.records} records, {stats.dropped} dropped)")
    mixes = [{"name": source.name, **source.mix_json()} for source in stage.sources]
    layout, info = stage_layout(stores, keys, mixes, s, stage.name, say)
    key = keys[0] if len(keys) == 1 else digest(keys)
    data = StageData(open_set(stores, layout, "train", s.packing), {}, stats, None, all(hits), key, stores[0],
                     layout, stores, info["mix"])
    data.markers = [store.folder / "store.json" for store in stores] + [layout / "layout.json"]
    for name in info["sets"]:
        if name != "train":
            data.evals[name] = open_set(stores, layout, name, s.packing)
    for source in stage.eval_sources:
        extra, _, extra_key, _ = prepared_store([source], source.format.yields, tokenizer, identity, s, say, workers)
        mixed = [{"name": source.name, **source.mix_json()}]
        folder, _ = stage_layout([extra], [extra_key], mixed, s.model_copy(update={"val_size": 0.0}), stage.name, say)
        data.evals[source.name] = open_set([extra], folder, "train", s.packing)
        data.markers += [extra.folder / "store.json", folder / "layout.json"]
    if s.packing:
        train = info["sets"]["train"]
        data.packing = PackingStats(train["examples"], train["rows"], train["tokens"], s.cutoff_len)
    stats.notes += [f"warning: {line}" for line in repeat_lines(info["mix"], s, len(data.train))]
    return data


def kind_data(stage, tokenizer, say):
    """What a stage kind with its own data preparation reads (``StageKind.prepare`` and ``inspect``):
    the stage's settings, kind options, sources and tokenizer (with the family's chat template when the
    kind is a chat kind and the tokenizer has none)."""
    from recipes.plugins.hookspecs import KindData

    if stage.kind_provider.chat:
        for note in ensure_chat_template(tokenizer):
            say(f"data: {note}")
    sources = tuple((src.format, src.options, list(src.files), src.name) for src in stage.sources)
    return KindData(stage.name, stage.settings, stage.kind_options, sources, tokenizer, say,
                    lambda: _records_under_policy(sources, stage.settings, say))


def _records_under_policy(sources, s, say):
    from recipes.bad_records import BadRecords, policy

    bad, count = BadRecords(s.on_bad_record == "skip", s.max_bad_records), 0
    with policy(bad):
        for fmt, options, files, _ in sources:
            for path in files:
                for record in fmt.read(Path(path), options):
                    count += 1
                    yield record
    bad.check_share(count + bad.count)
    if bad.count:
        say(f"data: {bad.describe()}")


def repeat_lines(mix: list[dict], s, sequences: int) -> list[str]:
    """The sources of a prepared mix seen more than ``REPEAT_LIMIT`` times over the stage (epochs, or
    the epochs that ``max_steps`` makes of ``sequences`` training rows)."""
    import math

    from recipes.config.mix_budget import repeat_warnings

    epochs = s.num_train_epochs
    if s.max_steps:
        per_epoch = max(math.ceil(math.ceil(sequences / s.per_device_train_batch_size) / s.gradient_accumulation_steps), 1)
        epochs = s.max_steps / per_epoch
    passes = [m["tokens"] / m["offered_tokens"] if m.get("offered_tokens") else 0.0 for m in mix]
    return repeat_warnings([m["name"] for m in mix], passes, epochs)


def store_line(source: str | None, folder: Path, key: str, cached: bool) -> str:
    """What a stage's preparation says of one training source's store."""
    named = f" {source!r}" if source else ""
    return f"data{named}: {'from the prepared store' if cached else 'prepared into the store'} {folder} ({key[:12]})"


def ensure_chat_template(tokenizer) -> list[str]:
    """Set the model family's chat template (Qwen's ChatML) on a tokenizer without one (before its
    identity is taken)."""
    if getattr(tokenizer, "chat_template", None):
        return []
    from recipes.family import family

    tokenizer.chat_template = family().chat_template()
    return [f"the tokenizer had no chat template: using the {family().name} family's"]


def tokenizer_identity(tokenizer) -> str:
    """A digest of what decides the tokens: the tokenizer's serialization (vocabulary, merges, added
    tokens, normalizer and pre-tokenizer) and its chat template. Serializing Qwen's 151k-token
    tokenizer takes a quarter of a second, and every stage of an evaluation matrix asks again, so the
    serialization's digest is kept on the tokenizer object itself (gone with it), with its length: a
    token added since is serialized again. The chat template, which recipes does set, is hashed each
    time."""
    known = getattr(tokenizer, "_recipes_serialization", None)
    if known is None or known[0] != len(tokenizer):
        backend = getattr(tokenizer, "backend_tokenizer", None)
        text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
        known = tokenizer._recipes_serialization = (len(tokenizer), hashlib.sha256(text.encode()).hexdigest())
    return hashlib.sha256((known[1] + (tokenizer.chat_template or "")).encode()).hexdigest()


def format_version(fmt) -> str:
    """The version of the distribution that provides a format (its reader's top-level package)."""
    from recipes.versions import provider_version

    return provider_version(fmt.read)


def store_key(sources, kind: str, identity: str, s, cleaning=None, earlier: list = ()) -> str:
    from recipes import __version__
    from recipes.data.store import STORE_VERSION
    from recipes.plugins.registry import get_registry

    cleaned = {}
    if cleaning is not None:  # absent for a source kept whole, so that those keys stay as they were
        cleaned = {"cleaning": cleaning.key(get_registry()),
                   "after": list(earlier) if cleaning.dedup != "none" else []}
    return digest({**cleaned,
        "version": STORE_VERSION, "recipes": __version__, "kind": kind, "tokenizer": identity,
        "cutoff_len": s.cutoff_len if kind == "conversations" else None,
        "overlong": s.overlong_examples if kind == "conversations" else None,
        "bad_records": [s.on_bad_record, s.max_bad_records if s.on_bad_record == "skip" else None],
        "sources": [{"format": fmt.name, "provider": format_version(fmt), "options": options.model_dump(mode="json"),
                     "files": [file_sha256(f) for f in files]} for fmt, options, files in sources],
    })


@contextmanager
def stage_work(stage: str):
    """A folder the stage's cleaning may write to (spilled digests, a filter's files), removed after."""
    folder = store_root() / "work" / f"{stage}-{os.getpid()}"
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def builds_here() -> bool:
    """Whether this process prepares (the first process of each node; a file lock keeps a shared cache
    folder from being built twice)."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


def prepared_store(sources, kind: str, tokenizer, identity: str, s, say, workers: int | None = None,
                   cleaning=None, earlier: tuple = ((), ()), corpus: dict | None = None):
    """(TokenStore, store.json content, key, prepared earlier) for ``sources`` read as ``kind``, cleaned
    by ``cleaning`` (None: kept whole) after the stage's earlier sources (``earlier``: their store keys
    and folders); ``corpus``: the stage's corpus-scope filters, made once (by name)."""
    from recipes.bad_records import BadRecords
    from recipes.data.build import build_store, default_workers, finish, locked, wait_for
    from recipes.data.progress import Progress
    from recipes.data.store import TokenStore
    from recipes.data.tokenization import document_separator

    key = store_key(sources, kind, identity, s, cleaning, earlier[0])
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
                    shared = corpus if corpus is not None else {"work": store_root() / "work" / str(os.getpid())}
                    with cleaning_state(cleaning, earlier[1], shared, shared["work"]) as (cleaning, seen, checks):
                        if checks:  # the earlier sources found ready have not been through them in this process
                            from recipes.data.replay import replay_ready
                            from recipes.plugins.registry import get_registry

                            replay_ready(shared, get_registry())
                        info = build_store(folder, sources, kind, tokenizer, settings,
                                           BadRecords(s.on_bad_record == "skip", s.max_bad_records), workers,
                                           progress, cleaning, seen, checks, earlier[1])
                finally:
                    progress.close()
                finish(folder, info)
                say("data: " + progress.summary(info))
    elif not cached:
        wait_for(marker, say)
        cached = True
    info = json.loads(marker.read_text())
    return TokenStore(folder, s.cutoff_len), info, key, cached


def stage_layout(stores, keys: list[str], mixes: list[dict], s, stage: str, say):
    """The stored sets, mix and packing of a stage over these stores (built once); (folder, layout.json)."""
    from recipes.data.build import locked, wait_for
    from recipes.data.layout import build_layout, layout_dir

    folder = layout_dir(store_root() / "layouts", keys, mixes, s.val_size, s.seed, s.packing, s.cutoff_len, stage)
    marker = folder / "layout.json"
    if not marker.is_file():
        if builds_here():
            with locked(folder):
                if not marker.is_file():
                    build_layout(folder, stores, mixes, s.val_size, s.seed, s.packing, stage)
        else:
            wait_for(marker, say)
    return folder, json.loads(marker.read_text())


def stats_of(infos: list[dict], notes: list[str], examples: int) -> DataStats:
    """The counts of a stage's stores, summed (``examples``: their sequences, pre-training blocks)."""
    total = lambda key: sum(info[key] for info in infos)  # noqa: E731
    stats = DataStats(records=total("records"), examples=examples, tokens=total("tokens"),
                      label_tokens=total("label_tokens"), truncated=total("truncated"), dropped=total("dropped"),
                      notes=list(notes), bad=total("bad"), bad_first=[p for info in infos for p in info["bad_first"]])
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
