"""Nothing disappears silently: the main process's side of cleaning a chunk (exact dedup, the
corpus-scope filters, in recipe order) and the ledger of what was removed, per reason.

A shard's ``shard-NNNNN.json`` carries its removals (documents and tokens per reason, and the first
few removed records as examples); ``shard-NNNNN.digests.npy`` and ``shard-NNNNN.places.jsonl`` the
digest and the place of each document it kept, in order, so that a later source of the stage is
deduplicated against this one, a resumed preparation knows what it kept, and a duplicate's example
can say what it duplicates. ``store.json`` sums the shards' removals.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from recipes.data.cleaning import EXACT, PREVIEW
from recipes.data.store import _save, write_json, write_shard

EXAMPLES = 10  # removed records kept as examples, per reason, per shard and per store


@dataclass
class Tokenized:
    """What a worker returns for one chunk: the examples of the records the document checks kept
    (``chunk``; ``chunk.origin`` maps each to its record), those records' ``digests``, ``places`` and
    (for corpus-scope filters) normalised ``texts``, and the ``removed`` ones: (reason, detail, place,
    preview, tokens)."""

    index: int
    chunk: object
    digests: np.ndarray
    places: list
    texts: list
    removed: list = field(default_factory=list)


class Ledger:
    """Removals per reason (documents, tokens) and the first ``EXAMPLES`` examples of each."""

    def __init__(self, meta: dict | None = None):
        self.counts: dict[str, dict] = {}
        self.examples: list[dict] = []
        if meta:
            self.merge(meta)

    def add(self, reason: str, detail: str, place: str, preview, tokens: int, **extra) -> None:
        """Count one removal; keep it as an example while its reason has fewer than ``EXAMPLES``
        (``preview``: its text, or a function giving it)."""
        count = self.counts.setdefault(reason, {"documents": 0, "tokens": 0})
        count["documents"] += 1
        count["tokens"] += int(tokens)
        if sum(e["reason"] == reason for e in self.examples) < EXAMPLES:
            text = preview() if callable(preview) else preview  # decoded only for the examples kept
            self.examples.append({"reason": reason, "detail": detail, "place": place, "text": text, **extra})

    def merge(self, meta: dict) -> None:
        for reason, count in meta.get("removed", {}).items():
            mine = self.counts.setdefault(reason, {"documents": 0, "tokens": 0})
            mine["documents"] += count["documents"]
            mine["tokens"] += count["tokens"]
        for example in meta.get("removed_examples", []):
            if sum(e["reason"] == example["reason"] for e in self.examples) < EXAMPLES:
                self.examples.append(example)

    def as_meta(self) -> dict:
        return {"removed": self.counts, "removed_examples": self.examples}


def settle(folder: Path, done: Tokenized, cleaning, seen, corpus: list, preview) -> dict:
    """Exact dedup and the corpus-scope filters on one tokenized chunk, in order; write its shard
    with what is kept; its counts (``write_shard``'s, plus the removals). ``preview(ids)``: the text
    of a removed example's first tokens (the worker sends the texts only for corpus-scope filters)."""
    chunk, ledger = done.chunk, Ledger()
    for removed in done.removed:
        ledger.add(*removed)
    origin = chunk.origin
    digests = np.asarray(done.digests, np.uint64)[origin]
    if cleaning is not None and cleaning.dedup != "none":
        keep = seen.first_seen(digests)
    else:  # kept whole, but what it keeps is what later sources are compared against
        keep = np.ones(len(origin), bool)
        if seen is not None:
            seen.first_seen(digests)
    starts = np.concatenate([[0], np.cumsum(chunk.lengths, dtype=np.int64)])
    for i in np.flatnonzero(~keep):
        ids = chunk.ids[starts[i]:starts[i + 1]]
        ledger.add(EXACT, "duplicate", done.places[origin[i]], lambda ids=ids: preview(ids), int(chunk.lengths[i]),
                   digest=f"{int(digests[i]):016x}")
    for i in np.flatnonzero(keep) if corpus else ():
        record = origin[i]
        for reason, check in corpus:
            detail = check(done.texts[record], done.places[record])
            if detail is not None:
                keep[i] = False
                ledger.add(reason, detail, done.places[record], done.texts[record][:PREVIEW], int(chunk.lengths[i]))
                break
    kept = _select(chunk, keep, starts)
    meta = write_shard(folder, done.index, kept)
    stem = folder / f"shard-{done.index:05d}"
    _save(Path(f"{stem}.digests.npy"), digests[keep])
    _write_lines(Path(f"{stem}.places.jsonl"), [done.places[o] for o in origin[keep]])
    meta.update(ledger.as_meta())
    write_json(Path(f"{stem}.json"), meta)  # again, with the removals: still written last
    return meta


def _write_lines(path: Path, values: list) -> None:
    """One JSON value a line, written aside and moved into place."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text("".join(json.dumps(v, ensure_ascii=False) + "\n" for v in values), encoding="utf-8")
    os.replace(temporary, path)


def _select(chunk, keep: np.ndarray, starts: np.ndarray):
    """The chunk with only the examples ``keep`` marks."""
    from dataclasses import replace

    if keep.all():
        return chunk
    tokens = np.repeat(keep, chunk.lengths)
    ids, mask = chunk.ids[tokens], None if chunk.mask is None else chunk.mask[tokens]
    return replace(chunk, ids=ids, lengths=chunk.lengths[keep], mask=mask, tokens=int(len(ids)),
                   label_tokens=int(mask.sum()) if mask is not None else int(len(ids)), origin=chunk.origin[keep])


def first_place(digest: int, folders: list[Path]) -> str | None:
    """Where a digest was first kept, looking through the stores ``folders`` in order (their shards'
    digests, memory-mapped, then the one place file that holds it)."""
    for folder in folders:
        for path in sorted(Path(folder).glob("shard-*.digests.npy")):
            found = np.flatnonzero(np.load(path, mmap_mode="r", allow_pickle=False) == np.uint64(digest))
            if len(found):
                with open(str(path).replace(".digests.npy", ".places.jsonl"), encoding="utf-8") as lines:
                    place = json.loads(next(islice(lines, int(found[0]), None)))
                return place or f"{path.name.split('.')[0]}, document {int(found[0]) + 1}"
    return None
