"""Corpus-scope filters (near dedup) keep state across a stage's sources, in recipe order. When an
earlier source's store was found ready, its documents never went through the filter in this process:
before a later source is cleaned, they are fed to it again, in order, from the source's files (the
documents the store kept, found by their digests in the order it kept them; each was kept then, so
the filter answers as it did and its state becomes what it was)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from recipes.bad_records import BadRecords, policy
from recipes.data.cleaning import corpus_checks
from recipes.data.dedup import kept_digests
from recipes.data.normalize import conversation_text, digest, normalize


def replay_ready(corpus: dict, registry) -> None:
    """Feed the stage's corpus-scope filters every ready earlier store's documents (once each)."""
    replayed = corpus.setdefault("replayed", set())
    for source, cleaning, folder in corpus.get("ready", []):
        if folder in replayed:
            continue
        replayed.add(folder)
        checks = corpus_checks(cleaning, registry, corpus)
        if checks:
            _feed(source, cleaning, Path(folder), checks)


def _feed(source, cleaning, folder: Path, checks: list) -> None:
    shards = json.loads((folder / "store.json").read_text())["shards"]
    kept = np.concatenate([np.asarray(d) for d in kept_digests(folder, shards)] or [np.empty(0, np.uint64)])
    position = 0
    with policy(BadRecords(True, float("inf"))):  # skipped then, or the store would not be ready
        for path in source.files:
            for record in source.format.read(Path(path), source.options):
                if position == len(kept):
                    return
                raw = record["text"] if source.format.yields == "documents" else conversation_text(record)
                text = raw if cleaning.normalize == "none" else normalize(raw)
                if digest(text) != int(kept[position]):
                    continue
                position += 1
                for _, check in checks:
                    check(text, record.get("_where", ""))
