"""Exact and near-duplicate removal with datatrove's own disk-based steps, keeping the first occurrence
in recipe order, as ``recipes prepare`` does.

- Exact: ``ExactDedupSignature`` -> ``ExactFindDedups`` -> ``ExactCopies`` over the text the checks
  see (normalised unless the source says ``normalize = "none"``). datatrove keeps, of equal texts,
  the one with the highest priority, then the lowest position in its task: the priority is
  ``65535 - task``, so the earliest task's copy stays, and tasks are recipe order (``reading``). A
  source with ``dedup = "none"`` is kept whole, but what it keeps is what later sources are compared
  against, as in prepare: its documents are signed like the others, and ``ExactCopies`` (datatrove's
  ``ExactDedupFilter`` with that exception) never drops one of them.
- Near: ``Signatures`` (datatrove's ``MinhashDedupSignature`` over 5-grams: characters for mostly-CJK
  text, words otherwise, ``shingles``) -> ``MinhashDedupBuckets`` (candidate pairs: one LSH band
  equal) -> ``FirstKept`` -> ``NearCopies``. datatrove's own cluster step takes every candidate pair
  as a duplicate and keeps the root of a union-by-size tree, which is not always the first document of
  its cluster; ``FirstKept`` keeps a pair only when the share of equal signature values reaches the
  threshold (as the built-in near dedup verifies its candidates), joins the pairs keeping the first
  document of each cluster, and records what each removed one copies and how closely (its detail).
"""

from __future__ import annotations

import struct

from datatrove.data import Document
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep
import numpy as np
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig
from datatrove.pipeline.dedup.minhash import MinhashDedupSignature
from datatrove.utils.binaryio import read_tuples_from_file
from datatrove.utils.typeshelper import ExtensionHelperSD

from recipes_datatrove.lsh import HASH

MAX_TASKS = 65535  # datatrove's exact-dedup priorities are 16-bit, one per task here
REMOVE = "<IIII"  # (document, first task, first document, similarity x 10000) per near copy, sorted by document
WHOLE = "<u2"  # the low 16 bits of each signature value: two different values agree there once in 65,536


def checked_text(document: Document) -> str:
    return document.text


def task_priority(document: Document) -> int:
    return MAX_TASKS - document.metadata["task"]


def exact_config() -> ExactDedupConfig:
    return ExactDedupConfig(content_getter=checked_text, document_priority=task_priority, hash_config=HASH)


class ExactCopies(PipelineStep):
    """Drops this task's documents that ``ExactFindDedups`` found to repeat an earlier one (into
    ``removed``), except those of the sources in ``kept_whole``."""

    name = "recipes: drop exact copies"
    type = "🫂 - DEDUP"

    def __init__(self, duplicates_folder: str, removed, kept_whole: set[str]):
        super().__init__()
        self.duplicates_folder, self.removed, self.kept_whole = duplicates_folder, removed, frozenset(kept_whole)

    def _listed(self, rank: int) -> set[int]:
        folder, name = get_datafolder(self.duplicates_folder), f"{rank:05d}{ExtensionHelperSD.stage_2_duplicates}"
        found: set[int] = set()
        for finder in folder.list_files(include_directories=True, recursive=False):  # one folder per hash range
            if folder.exists(f"{finder}/{name}"):
                with folder.open(f"{finder}/{name}", "rb") as handle:
                    found.update(np.frombuffer(handle.read(), dtype="<u4").tolist())
        return found

    def run(self, data, rank: int = 0, world_size: int = 1):
        listed = self._listed(rank)
        with self.removed:
            for position, document in enumerate(data):
                if position in listed and document.metadata["source"] not in self.kept_whole:
                    self.removed.write(document, rank)
                    self.stat_update("removed: exact")
                    continue
                yield document


class Signatures(MinhashDedupSignature):
    """datatrove's signature step, also writing each document's whole signature (``WHOLE`` per value)
    at its position in ``<task>.whole``, for ``FirstKept`` to verify candidate pairs with (a document
    without a single 5-gram gets zeros: it is never a candidate), and its place, in ``<task>.places``
    (a line each) with ``<task>.offsets`` (where each line starts), for a removed copy's detail."""

    def __init__(self, output_folder: str, whole_folder: str, config, language):
        super().__init__(output_folder, config, language=language)
        self.whole_folder, self._whole = whole_folder, None

    def get_shingles(self, text: str):
        shingles = super().get_shingles(text)  # called once per document, in order
        if shingles.size == 0:
            self._whole.write(bytes(np.dtype(WHOLE).itemsize * self.num_hashes))
        return shingles

    def get_signature(self, shingles):
        signature = super().get_signature(shingles)  # called right after, for a document with 5-grams
        self._whole.write(np.asarray(signature, dtype=np.uint64).ravel().astype(WHOLE).tobytes())
        return signature

    def run(self, data, rank: int = 0, world_size: int = 1):
        folder = get_datafolder(self.whole_folder)
        with folder.open(f"{rank:05d}.whole", "wb") as self._whole, \
                folder.open(f"{rank:05d}.places", "wb") as places, folder.open(f"{rank:05d}.offsets", "wb") as offsets:
            def noted(documents):
                written = 0
                for document in documents:
                    line = document.metadata["place"].replace("\n", " ").encode("utf-8") + b"\n"
                    offsets.write(struct.pack("<Q", written))
                    places.write(line)
                    written += len(line)
                    yield document

            super().run(noted(data), rank, world_size)


class WholeSignatures:
    """Random access to the documents' whole signatures (``Signatures``), one open file per task."""

    def __init__(self, folder: str, num_hashes: int):
        self.folder, self.num_hashes = get_datafolder(folder), num_hashes
        self.size = np.dtype(WHOLE).itemsize * num_hashes
        self.files: dict[int, object] = {}

    def similarity(self, a: tuple[int, int], b: tuple[int, int]) -> float:
        return float(np.count_nonzero(self._of(*a) == self._of(*b))) / self.num_hashes

    def _of(self, task: int, doc: int) -> np.ndarray:
        if task not in self.files:
            self.files[task] = self.folder.open(f"{task:05d}.whole", "rb")
        handle = self.files[task]
        handle.seek(doc * self.size)
        return np.frombuffer(handle.read(self.size), dtype=WHOLE)

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()


class Places:
    """The place of a document signed by ``Signatures`` (task, position), read where it is needed."""

    def __init__(self, folder: str):
        self.folder, self.files = get_datafolder(folder), {}

    def __call__(self, task: int, doc: int) -> str:
        if task not in self.files:
            self.files[task] = tuple(self.folder.open(f"{task:05d}.{kind}", "rb") for kind in ("offsets", "places"))
        offsets, places = self.files[task]
        offsets.seek(8 * doc)
        places.seek(struct.unpack("<Q", offsets.read(8))[0])
        return places.readline().decode("utf-8").rstrip("\n")

    def close(self) -> None:
        for handles in self.files.values():
            for handle in handles:
                handle.close()


class FirstKept(PipelineStep):
    """One task: the candidate pairs of every band, each kept when its estimated similarity reaches
    ``threshold``, joined into clusters; every document of a cluster but its first (lowest task, then
    position) is listed in ``<task>.remove`` with that first one and their similarity."""

    name = "recipes: near-duplicate clusters, first kept"
    type = "🫂 - DEDUP"

    def __init__(self, pairs_folder: str, whole_folder: str, output_folder: str, num_hashes: int, threshold: float):
        super().__init__()
        self.pairs_folder, self.whole_folder, self.output_folder = pairs_folder, whole_folder, output_folder
        self.num_hashes, self.threshold = num_hashes, threshold

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if world_size != 1:
            raise ValueError("the near-duplicate clusters are joined in one task")
        whole = WholeSignatures(self.whole_folder, self.num_hashes)
        try:
            self._cluster(whole)
        finally:
            whole.close()

    def _cluster(self, whole: WholeSignatures) -> None:
        parent: dict[tuple[int, int], tuple[int, int]] = {}

        def root(node):
            while parent.get(node, node) != node:
                parent[node] = parent.get(parent[node], parent[node])  # path halving
                node = parent[node]
            return node

        pairs = get_datafolder(self.pairs_folder)
        for name in pairs.list_files(glob_pattern="*.dups"):
            with pairs.open(name, "rb") as handle:
                for f1, d1, f2, d2 in read_tuples_from_file(handle, "4I", lines_to_buffer=1000):
                    a, b = root((f1, d1)), root((f2, d2))
                    if a != b and whole.similarity((f1, d1), (f2, d2)) >= self.threshold:
                        parent[max(a, b)] = min(a, b)  # the earlier document is the cluster's root
                        self.stat_update("pairs kept")
                    else:
                        self.stat_update("pairs dropped")
        removed: dict[int, list] = {}
        for node in parent:
            first = root(node)
            if first != node:
                removed.setdefault(node[0], []).append((node[1], *first, round(10000 * whole.similarity(node, first))))
        out = get_datafolder(self.output_folder)
        for task, rows in removed.items():
            with out.open(f"{task:05d}.remove", "wb") as handle:
                handle.write(b"".join(struct.pack(REMOVE, *row) for row in sorted(rows)))
            self.stat_update("removed", value=len(rows))


class NearCopies(PipelineStep):
    """Drops this task's documents that ``FirstKept`` listed, into ``removed`` with reason ``near`` and,
    as detail, the place of the first document of their cluster and their estimated similarity."""

    name = "recipes: drop near copies"
    type = "🫂 - DEDUP"

    def __init__(self, clusters_folder: str, whole_folder: str, removed):
        super().__init__()
        self.clusters_folder, self.whole_folder, self.removed = clusters_folder, whole_folder, removed

    def _listed(self, rank: int) -> dict[int, tuple[int, int]]:
        folder, name = get_datafolder(self.clusters_folder), f"{rank:05d}.remove"
        if not folder.exists(name):
            return {}
        with folder.open(name, "rb") as handle:
            return {doc: (task, first, similarity / 10000)
                    for doc, task, first, similarity in read_tuples_from_file(handle, "IIII", lines_to_buffer=1000)}

    def run(self, data, rank: int = 0, world_size: int = 1):
        listed, place = self._listed(rank), Places(self.whole_folder)
        try:
            with self.removed:
                for position, document in enumerate(data):
                    if position in listed:
                        task, first, similarity = listed[position]
                        document.metadata.update(reason="near",
                                                 detail=f"near duplicate ({similarity:.2f}) of {place(task, first)}")
                        self.removed.write(document, rank)
                        self.stat_update("removed: near")
                        continue
                    yield document
        finally:
            place.close()
