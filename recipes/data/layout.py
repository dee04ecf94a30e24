"""A stage's view of a token store: which examples train, which are held out, and (SFT with
``packing``) which examples share each row. Computed once, at preparation, and stored as index arrays
(``layout-<hash>/``), so that no run and no rank recomputes it; the Datasets handed to the HF Trainer
are map-style and read the memory-mapped store, an example at a time.

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

from recipes.data.store import TokenStore, _save, write_json
from recipes.data.tokenization import IGNORE_INDEX
from recipes.errors import RecipeError

LAYOUT_VERSION = 1


def held_out(count_examples: int, val_size: float, seed: int, stage: str) -> np.ndarray:
    """Which examples ``val_size`` holds out (a bool per example), exactly as ``prepare.split`` chooses."""
    count = int(val_size) if val_size >= 1 else round(count_examples * val_size)
    if not 0 < count < count_examples:
        raise RecipeError(f"stage {stage!r}: val_size {val_size:g} holds out {count} of {count_examples} examples; "
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


def layout_dir(store: Path, val_size: float, seed: int, packing: bool, cutoff_len: int, stage: str) -> Path:
    key = json.dumps({"v": LAYOUT_VERSION, "val_size": val_size, "seed": seed if val_size else None,
                      "packing": packing, "cutoff_len": cutoff_len, "stage": stage if val_size else None})
    return Path(store) / f"layout-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def build_layout(folder: Path, store: TokenStore, val_size: float, seed: int, packing: bool, stage: str) -> None:
    """Write the train/held-out indices and the packed rows of each; ``layout.json`` last (ready)."""
    folder.mkdir(parents=True, exist_ok=True)
    lengths = store.lengths()
    sets = {"train": np.arange(len(lengths), dtype=np.int64)}
    if val_size:
        held = held_out(len(lengths), val_size, seed, stage)
        sets = {"train": np.flatnonzero(~held), "val": np.flatnonzero(held)}
    info = {"sets": {}}
    for name, indices in sets.items():
        _save(folder / f"{name}.indices.npy", indices)
        entry = {"examples": int(len(indices)), "tokens": int(lengths[indices].sum())}
        if packing:
            members, starts = pack_lengths(lengths[indices], store.cutoff_len)
            _save(folder / f"{name}.rows.npy", indices[members])
            _save(folder / f"{name}.row_starts.npy", starts)
            entry["rows"] = int(len(starts) - 1)
        info["sets"][name] = entry
    write_json(folder / "layout.json", info)


class StoreDataset:
    """A map-style dataset over some examples of a store: ``{"input_ids", "labels"}`` lists."""

    def __init__(self, store: TokenStore, indices: np.ndarray):
        self.store, self.indices = store, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict:
        ids, labels = self.store.example(int(self.indices[item]))
        return {"input_ids": ids.tolist(), "labels": labels.tolist()}


class PackedDataset:
    """Packed rows: ``{"input_ids", "labels", "position_ids"}``, each example's first label -100 and its
    positions restarting at 0, as ``recipes.data.packing.pack_examples`` builds them."""

    def __init__(self, store: TokenStore, members: np.ndarray, starts: np.ndarray):
        self.store, self.members, self.starts = store, members, starts

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, item: int) -> dict:
        ids, labels, positions = [], [], []
        for index in self.members[self.starts[item]:self.starts[item + 1]].tolist():
            tokens, marks = self.store.example(index)
            marks[0] = IGNORE_INDEX
            ids.append(tokens)
            labels.append(marks)
            positions.append(np.arange(len(tokens)))
        return {"input_ids": np.concatenate(ids).tolist(), "labels": np.concatenate(labels).tolist(),
                "position_ids": np.concatenate(positions).tolist()}


def open_set(store: TokenStore, folder: Path, name: str, packing: bool):
    load = lambda part: np.load(folder / f"{name}.{part}.npy", mmap_mode="r", allow_pickle=False)  # noqa: E731
    if packing:
        return PackedDataset(store, load("rows"), load("row_starts"))
    return StoreDataset(store, load("indices"))
