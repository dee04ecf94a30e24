"""Exact dedup's memory: the 8-byte digests of the documents kept so far, in bounded memory.

Digests live in sorted numpy runs (8 bytes a document; a membership test is a binary search per
run). A new batch becomes a run, and runs of similar size are merged, so that there are about log2
of the documents' count runs (each document is merged a logarithmic number of times). Past
``limit`` digests in memory, the runs are merged into one sorted file under the work folder and
memory-mapped: the process then holds at most ``limit`` digests however large the corpus, and the
files are read by binary search, a few pages a lookup.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

IN_MEMORY = 32 << 20  # digests held in memory before they spill to a file (256 MB)


def memory_limit() -> int:
    """The digests held in memory (``RECIPES_DEDUP_IN_MEMORY`` overrides, e.g. to test the spill)."""
    return int(os.environ.get("RECIPES_DEDUP_IN_MEMORY", "0")) or IN_MEMORY


class SeenDigests:
    """The digests seen so far; ``first_seen`` keeps the first occurrence of each."""

    def __init__(self, work_dir: Path, limit: int | None = None):
        self.work_dir, self.limit = Path(work_dir), limit or memory_limit()
        self.runs: list[np.ndarray] = []  # sorted, in memory, larger first
        self.files: list[np.ndarray] = []  # sorted, memory-mapped
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def contains(self, digests: np.ndarray) -> np.ndarray:
        found = np.zeros(len(digests), bool)
        for run in (*self.files, *self.runs):
            at = np.searchsorted(run, digests)
            inside = at < len(run)
            found[inside] |= run[at[inside]] == digests[inside]
        return found

    def first_seen(self, digests: np.ndarray) -> np.ndarray:
        """Per digest: whether it is new (seen neither before nor earlier in ``digests``); the new ones
        are added."""
        digests = np.asarray(digests, np.uint64)
        _, first = np.unique(digests, return_index=True)
        keep = np.zeros(len(digests), bool)
        keep[first] = True
        keep &= ~self.contains(digests)
        self.add(digests[keep])
        return keep

    def add(self, digests: np.ndarray) -> None:
        """Add digests not seen yet (each once)."""
        if not len(digests):
            return
        self.runs.append(np.sort(np.asarray(digests, np.uint64)))
        self.count += len(digests)
        while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
            last = self.runs.pop()
            self.runs[-1] = np.sort(np.concatenate([self.runs[-1], last]), kind="stable")
        if sum(len(run) for run in self.runs) > self.limit:
            self._spill()

    def _spill(self) -> None:
        merged = np.sort(np.concatenate(self.runs), kind="stable")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        path = self.work_dir / f"seen-{len(self.files):05d}.npy"
        np.save(path, merged, allow_pickle=False)
        self.files.append(np.load(path, mmap_mode="r", allow_pickle=False))
        self.runs = []


def kept_digests(folder: Path, shards: list[dict]):
    """The digests a store kept, shard by shard, in order (memory-mapped)."""
    for shard in shards:
        path = Path(folder) / f"shard-{shard['index']:05d}.digests.npy"
        if path.is_file():
            yield np.load(path, mmap_mode="r", allow_pickle=False)
