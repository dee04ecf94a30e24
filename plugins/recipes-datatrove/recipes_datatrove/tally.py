"""Counts that one task of one step writes beside the shards: per source, the documents and characters
read, kept, or removed by each reason; the summary adds every task's counts up (``summary``).

A task writes its file when it ends, ``counts/<phase>/<rank>.json``: a task that failed and is run again
overwrites it, so nothing is counted twice.
"""

from __future__ import annotations

import json
from collections import defaultdict

from datatrove.io import get_datafolder


class Tally:
    def __init__(self, folder: str, phase: str, rank: int):
        self.folder, self.phase, self.rank = folder, phase, rank
        self.counts: dict[str, dict[str, list[int]]] = defaultdict(dict)
        self.bad = {"count": 0, "first": []}

    def add(self, source: str, reason: str, text: str) -> None:
        docs_chars = self.counts[source].setdefault(reason, [0, 0])
        docs_chars[0] += 1
        docs_chars[1] += len(text)

    def counts_of(self, reason: str) -> list[list[int]]:
        return [by_reason[reason] for by_reason in self.counts.values() if reason in by_reason]

    def bad_records(self, count: int, first: list) -> None:
        self.bad = {"count": count, "first": list(first)}

    def save(self) -> None:
        with get_datafolder(self.folder).open(f"{self.phase}/{self.rank:05d}.json", "wt") as handle:
            json.dump({"counts": self.counts, "bad_records": self.bad}, handle, ensure_ascii=False)


def load_all(folder: str) -> list[dict]:
    """Every task's counts of every phase."""
    data = get_datafolder(folder)
    if not data.exists(""):
        return []
    return [json.loads(data.open(name, "rt").read()) for name in data.list_files(glob_pattern="*/*.json")]
