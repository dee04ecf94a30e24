"""Exact dedup with datatrove's disk-based signatures, the first occurrence in recipe order kept, as
``recipes prepare`` keeps it: ``ExactDedupSignature`` -> ``ExactFind`` -> ``ExactCopies``, over the
text the checks see (normalised unless the source says ``normalize = "none"``), hashed with sha1.

Of equal texts, datatrove's order puts first the one with the highest priority, then the lowest
position in its task: the priority is ``65535 - task``, so the earliest task's copy comes first, and
tasks are recipe order (``reading``). ``ExactFind`` is datatrove's ``ExactFindDedups`` merge (the
signature files of one hash range, merged in that order) that also writes, for each copy, which
document came first, so that its detail names the original's place. A source with ``dedup = "none"``
is kept whole, but what it keeps is what later sources are compared against, as in prepare: its
documents are signed like the others, and ``ExactCopies`` never drops one of them.
"""

from __future__ import annotations

import heapq
import struct

from datatrove.data import Document
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, read_sigs
from datatrove.utils.binaryio import read_tuples_from_file
from datatrove.utils.typeshelper import ExtensionHelperSD

from recipes_datatrove.lsh import HASH
from recipes_datatrove.places import DropListed, Places

MAX_TASKS = 65535  # datatrove's exact-dedup priorities are 16-bit, one per task here
COPY = "<III"  # (position of the copy, task of the first, position of the first)


def checked_text(document: Document) -> str:
    return document.text


def task_priority(document: Document) -> int:
    return MAX_TASKS - document.metadata["task"]


def exact_config() -> ExactDedupConfig:
    return ExactDedupConfig(content_getter=checked_text, document_priority=task_priority, hash_config=HASH)


class ExactFind(PipelineStep):
    """One hash range (this task's folder of signatures): every document after the first of its text,
    written into ``<range>/<task of the copy>.copies`` with the first's task and position."""

    name = "recipes: find exact copies"
    type = "🫂 - DEDUP"

    def __init__(self, signatures_folder: str, output_folder: str, config: ExactDedupConfig):
        super().__init__()
        self.signatures_folder, self.output_folder, self.config = signatures_folder, output_folder, config

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        folder = get_datafolder(self.signatures_folder)
        files = folder.list_files(subdirectory=f"{rank:04d}", glob_pattern=f"*{ExtensionHelperSD.stage_1_signature}")
        readers = [read_sigs(handle, i, self.config.hash_config, lines_to_buffer=1000)
                   for i, handle in enumerate(folder.open_files(files))]
        queue = [sig for sig in (next(reader, None) for reader in readers) if sig is not None]
        heapq.heapify(queue)
        copies: dict[int, list] = {}
        first = None
        while queue:
            sig = heapq.heappop(queue)
            if first is not None and first.hash_value == sig.hash_value:
                copies.setdefault(int(sig.file_stem), []).append((sig.doc_id, int(first.file_stem), first.doc_id))
            else:
                first = sig
            following = next(readers[sig.file_id], None)
            if following is not None:
                heapq.heappush(queue, following)
        out = get_datafolder(self.output_folder)
        for task, rows in copies.items():
            with out.open(f"{rank:05d}/{task:05d}.copies", "wb") as handle:
                handle.write(b"".join(struct.pack(COPY, *row) for row in rows))
            self.stat_update("copies", value=len(rows))


class ExactCopies(DropListed):
    """Drops this task's documents that ``ExactFind`` found to repeat an earlier one, the detail naming
    the first's place, except those of the sources in ``kept_whole``."""

    name = "recipes: drop exact copies"
    reason = "exact"

    def __init__(self, copies_folder: str, places_folder: str, removed, kept_whole: set[str]):
        super().__init__(copies_folder, places_folder, removed)
        self.kept_whole = frozenset(kept_whole)

    def listed(self, rank: int) -> dict[int, tuple[int, int]]:
        folder, found = get_datafolder(self.listed_folder), {}
        for name in folder.list_files(glob_pattern=f"*/{rank:05d}.copies"):  # one folder per hash range
            with folder.open(name, "rb") as handle:
                found.update((doc, (task, first))
                             for doc, task, first in read_tuples_from_file(handle, "III", lines_to_buffer=1000))
        return found

    def detail(self, entry, places: Places) -> str:
        return f"duplicate of {places(*entry)}"

    def keeps(self, document) -> bool:
        return document.metadata["source"] in self.kept_whole
