"""A stage's view of its sources' token stores (one store per source): which examples of each are
used (``max_samples`` / ``max_tokens``), which are held out (``val_size``: a share of each source), the
training order of the mix (``weight``, recipes.data.mixing) and (SFT with ``packing``) which examples
share each row. Computed once, at preparation, and stored as index arrays (``layouts/<hash>/``), so
that no run and no rank recomputes it; the Datasets handed to the HF Trainer are map-style and read
the memory-mapped stores, an example at a time.

Each set is an ``order``: rows of (source, example) in that set's order; packed rows are positions
in it. A set file is ``set<k>``, its name (``train``, ``val``, ``val/NAME``) in ``layout.json``.

The packer is the same best-fit decreasing as ``recipes.data.packing.pack_examples`` (the same rows,
tie for tie), in about linear time: rows are kept in buckets by the room they have left (at most
``cutoff_len`` distinct values), a sorted list of the non-empty rooms finds the best fit by bisection,
and each bucket is a heap of row numbers (the oldest row first, as the sorted list of today does).
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import json
import random
from pathlib import Path

import numpy as np

from recipes.config.sources import held_count, held_out_names
from recipes.data.mixing import cap, mix
from recipes.data.store import TokenStore, _save, write_json
from recipes.data.tokenization import IGNORE_INDEX
from recipes.errors import RecipeError

LAYOUT_VERSION = 3  # 3: an epoch is one pass over the main source


def held_out(count_examples: int, val_size: float, seed: int, stage: str, source: str | None = None) -> np.ndarray:
    """Which examples ``val_size`` holds out (a bool per example), exactly as ``prepare.split`` chooses."""
    count = int(val_size) if val_size >= 1 else round(count_examples * val_size)
    if not 0 < count < count_examples:
        of = f" of source {source!r}" if source else ""
        raise RecipeError(f"stage {stage!r}: val_size {val_size:g} holds out {count} of {count_examples} examples{of}; "
                          "set it so that both the training and the evaluation set keep at least one")
    order = list(range(count_examples))
    random.Random(seed).shuffle(order)
    held = np.zeros(count_examples, bool)
    held[np.asarray(order[:count], dtype=np.int64)] = True
    return held


def pack_lengths(lengths: np.ndarray, cutoff_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Best-fit decreasing over ``lengths``: (members, row_starts), the positions of each row's
    examples in ``members[row_starts[r]:row_starts[r + 1]]``, rows in the order they were opened."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) and not (lengths.min() > 0 and lengths.max() <= cutoff_len):
        bad = int(np.flatnonzero((lengths <= 0) | (lengths > cutoff_len))[0])
        raise ValueError(f"example {bad} has {lengths[bad]} tokens; packing needs 1 to cutoff_len={cutoff_len}")
    order = np.lexsort((np.arange(len(lengths)), -lengths))  # longest first, equal lengths in order
    row_of = np.empty(len(lengths), np.int64)
    rooms: list[int] = []  # the distinct rooms left that some row has, sorted
    buckets: dict[int, list[int]] = {}  # room -> heap of row numbers
    opened = 0
    for i, length in zip(order.tolist(), lengths[order].tolist()):
        slot = bisect.bisect_left(rooms, length)
        if slot < len(rooms):
            room = rooms[slot]
            heap = buckets[room]
            row = heapq.heappop(heap)
            if not heap:
                del rooms[slot], buckets[room]
        else:
            room, row = cutoff_len, opened
            opened += 1
        row_of[i] = row
        left = room - length
        if left > 0:
            if left not in buckets:
                buckets[left] = []
                bisect.insort(rooms, left)
            heapq.heappush(buckets[left], row)
    # members of each row in the order they were placed (longest first; ties by position)
    placed = order[np.argsort(row_of[order], kind="stable")]
    counts = np.bincount(row_of, minlength=opened)
    return placed, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def layout_dir(root: Path, store_keys: list[str], mixes: list[dict], val_size: float, seed: int, packing: bool,
               cutoff_len: int, stage: str) -> Path:
    """The folder of a stage's layout over these stores (``mixes``: each source's name, weight and caps)."""
    weighted = any(m.get("weight") is not None for m in mixes)
    key = json.dumps({"v": LAYOUT_VERSION, "stores": store_keys, "mix": mixes, "val_size": val_size,
                      "seed": seed if val_size or weighted else None, "packing": packing, "cutoff_len": cutoff_len,
                      "stage": stage if val_size else None}, sort_keys=True)
    return Path(root) / f"layout-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def build_layout(folder: Path, stores: list[TokenStore], mixes: list[dict], val_size: float, seed: int,
                 packing: bool, stage: str) -> None:
    """Write every set's order (and packed rows); ``layout.json`` last (ready)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [m["name"] for m in mixes]
    lengths = [store.lengths() for store in stores]
    kept = [cap(x, m.get("max_samples"), m.get("max_tokens")) for x, m in zip(lengths, mixes)]
    train, sets = [], {}
    for i, (count, name) in enumerate(zip(kept, held_out_names(names))):
        indices = np.arange(count, dtype=np.int64)
        if val_size:
            held = held_out(count, held_count(val_size, count, sum(kept), len(stores)), seed, stage,
                            names[i] if len(stores) > 1 else None)
            sets[name] = np.stack([np.full(int(held.sum()), i), indices[held]], axis=1)
            indices = indices[~held]
        train.append(indices)
    order, shares = mix([x[t] for x, t in zip(lengths, train)], [m.get("weight") for m in mixes], seed, names,
                        [m.get("main") for m in mixes])
    for i, indices in enumerate(train):
        rows = order[:, 0] == i
        order[rows, 1] = indices[order[rows, 1]]
    sets = {"train": order, **sets}
    # per source: what it got, what it has, what of it remains for training (capped, held-out removed)
    info = {"sets": {}, "mix": [{"name": m.name, "weight": w.get("weight"), "examples": m.examples,
                                 "tokens": m.tokens, "share": m.share, "available_examples": int(len(x)),
                                 "available_tokens": int(x.sum()), "kept_examples": int(k),
                                 "offered_tokens": int(x[t].sum())}
                                for m, w, x, k, t in zip(shares, mixes, lengths, kept, train)]}
    for k, (name, rows) in enumerate(sets.items()):
        file = f"set{k}"
        _save(folder / f"{file}.order.npy", rows.astype(np.int64))
        row_lengths = _lengths_of(rows, lengths)
        entry = {"file": file, "examples": int(len(rows)), "tokens": int(row_lengths.sum())}
        if packing:
            members, starts = pack_lengths(row_lengths, stores[0].cutoff_len)
            _save(folder / f"{file}.rows.npy", members.astype(np.int64))
            _save(folder / f"{file}.row_starts.npy", starts)
            entry["rows"] = int(len(starts) - 1)
        info["sets"][name] = entry
    write_json(folder / "layout.json", info)


def _lengths_of(rows: np.ndarray, lengths: list[np.ndarray]) -> np.ndarray:
    out = np.zeros(len(rows), np.int64)
    for i, x in enumerate(lengths):
        pick = rows[:, 0] == i
        out[pick] = x[rows[pick, 1]]
    return out


class StoreDataset:
    """A map-style dataset over (source, example) rows of the stores: ``{"input_ids", "labels"}`` lists."""

    def __init__(self, stores: list[TokenStore], order: np.ndarray):
        self.stores, self.order = stores, order

    def __len__(self) -> int:
        return len(self.order)

    def example(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        source, index = self.order[item]
        return self.stores[int(source)].example(int(index))

    def source_of(self, item: int) -> int:
        return int(self.order[item][0])

    @property
    def tagged(self) -> bool:
        """Whether items carry ``sources`` (the source of each token: a stage with several)."""
        return len(self.stores) > 1

    def __getitem__(self, item: int) -> dict:
        ids, labels = self.example(item)
        out = {"input_ids": ids.tolist(), "labels": labels.tolist()}
        if self.tagged:
            out["sources"] = [self.source_of(item)] * len(ids)
        return out


class PackedDataset:
    """Packed rows: ``{"input_ids", "labels", "position_ids"}``, each example's first label -100 and its
    positions restarting at 0, as ``recipes.data.packing.pack_examples`` builds them."""

    def __init__(self, examples: StoreDataset, members: np.ndarray, starts: np.ndarray):
        self.examples, self.members, self.starts = examples, members, starts

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, item: int) -> dict:
        ids, labels, positions, sources = [], [], [], []
        for index in self.members[self.starts[item]:self.starts[item + 1]].tolist():
            tokens, marks = self.examples.example(index)
            marks[0] = IGNORE_INDEX
            ids.append(tokens)
            labels.append(marks)
            positions.append(np.arange(len(tokens)))
            sources.append(np.full(len(tokens), self.examples.source_of(index)))
        out = {"input_ids": np.concatenate(ids).tolist(), "labels": np.concatenate(labels).tolist(),
               "position_ids": np.concatenate(positions).tolist()}
        if self.examples.tagged:
            out["sources"] = np.concatenate(sources).tolist()
        return out


def open_set(stores: list[TokenStore], folder: Path, name: str, packing: bool):
    """The Dataset of set ``name`` of a layout (packed rows when ``packing``)."""
    entry = json.loads((folder / "layout.json").read_text())["sets"][name]
    load = lambda part: np.load(folder / f"{entry['file']}.{part}.npy", mmap_mode="r", allow_pickle=False)  # noqa: E731
    examples = StoreDataset(stores, load("order"))
    if packing:
        return PackedDataset(examples, load("rows"), load("row_starts"))
    return examples


def examples_of(dataset) -> StoreDataset:
    """The examples under a set's Dataset (a packed one's, unpacked)."""
    return dataset.examples if isinstance(dataset, PackedDataset) else dataset


def example_lengths(dataset) -> np.ndarray:
    """The length of each example of a set, in its order."""
    examples = examples_of(dataset)
    return _lengths_of(np.asarray(examples.order), [store.lengths() for store in examples.stores])
