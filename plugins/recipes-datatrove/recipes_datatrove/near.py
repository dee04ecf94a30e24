"""Near-duplicate removal with datatrove's disk-based MinHash steps, decided as the built-in near dedup
decides (recipes-near-dedup), the first occurrence in recipe order kept:

``Signatures`` (datatrove's ``MinhashDedupSignature`` over 5-grams: characters for mostly-CJK text,
words otherwise, ``shingles``) -> ``MinhashDedupBuckets`` (candidate pairs: one LSH band equal) ->
``FirstKept`` -> ``NearCopies``. datatrove's own cluster step takes every candidate pair as a
duplicate and keeps the root of a union-by-size tree, which is not always the first document of its
cluster; ``FirstKept`` keeps a pair only when the share of equal signature values reaches the
threshold (as the built-in verifies its candidates), joins the pairs keeping the first document of
each cluster, and records what each removed one copies and how closely (its detail).
"""

from __future__ import annotations

import struct

import numpy as np
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import MinhashDedupSignature
from datatrove.utils.binaryio import read_tuples_from_file

from recipes_datatrove.places import DropListed, Places

REMOVE = "<IIII"  # (document, first task, first document, similarity x 10000) per near copy, sorted by document
WHOLE = "<u2"  # the low 16 bits of each signature value: two different values agree there once in 65,536


class Signatures(MinhashDedupSignature):
    """datatrove's signature step, also writing each document's whole signature (``WHOLE`` per value)
    at its position in ``<task>.whole``, for ``FirstKept`` to verify candidate pairs with (a document
    without a single 5-gram gets zeros: it is never a candidate)."""

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
        with get_datafolder(self.whole_folder).open(f"{rank:05d}.whole", "wb") as self._whole:
            super().run(data, rank, world_size)


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


class NearCopies(DropListed):
    """Drops this task's documents that ``FirstKept`` listed, the detail naming the first document of
    their cluster and their estimated similarity."""

    name = "recipes: drop near copies"
    reason = "near"

    def listed(self, rank: int) -> dict[int, tuple[int, int, float]]:
        folder, name = get_datafolder(self.listed_folder), f"{rank:05d}.remove"
        if not folder.exists(name):
            return {}
        with folder.open(name, "rb") as handle:
            return {doc: (task, first, similarity / 10000)
                    for doc, task, first, similarity in read_tuples_from_file(handle, "IIII", lines_to_buffer=1000)}

    def detail(self, entry, places: Places) -> str:
        task, first, similarity = entry
        return f"near duplicate ({similarity:.2f}) of {places(task, first)}"
