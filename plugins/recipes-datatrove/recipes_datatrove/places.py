"""Where each document a dedup step signs came from, so that a removed copy's detail names its
original's place, as prepare's does: ``PlaceIndex`` (a step just before a signature step, passing the
documents on) writes, per task, each document's place as a line of ``<task>.places`` and where that
line starts in ``<task>.offsets`` (8 bytes a document); ``Places`` reads one back by (task, position);
``DropListed`` drops the copies a dedup step listed by position, naming their originals.
"""

from __future__ import annotations

import struct

from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep


class PlaceIndex(PipelineStep):
    name = "recipes: note the places"
    type = "📍 - INDEX"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data, rank: int = 0, world_size: int = 1):
        folder, written = get_datafolder(self.folder), 0
        with folder.open(f"{rank:05d}.places", "wb") as places, folder.open(f"{rank:05d}.offsets", "wb") as offsets:
            for document in data:
                line = document.metadata["place"].replace("\n", " ").encode("utf-8") + b"\n"
                offsets.write(struct.pack("<Q", written))
                places.write(line)
                written += len(line)
                yield document


class Places:
    """The place of the document at ``position`` of task ``task`` (``PlaceIndex``'s files)."""

    def __init__(self, folder: str):
        self.folder, self.files = get_datafolder(folder), {}

    def __call__(self, task: int, position: int) -> str:
        if task not in self.files:
            self.files[task] = tuple(self.folder.open(f"{task:05d}.{kind}", "rb") for kind in ("offsets", "places"))
        offsets, places = self.files[task]
        offsets.seek(8 * position)
        places.seek(struct.unpack("<Q", offsets.read(8))[0])
        return places.readline().decode("utf-8").rstrip("\n")

    def close(self) -> None:
        for handles in self.files.values():
            for handle in handles:
                handle.close()


class DropListed(PipelineStep):
    """Drops this task's documents that an earlier step listed by position (``listed``: position ->
    entry) into ``removed``, under ``reason``, with ``detail(entry, places)`` (unless ``keeps``)."""

    reason = ""
    type = "🫂 - DEDUP"

    def __init__(self, listed_folder: str, places_folder: str, removed):
        super().__init__()
        self.listed_folder, self.places_folder, self.removed = listed_folder, places_folder, removed

    def listed(self, rank: int) -> dict:
        raise NotImplementedError

    def detail(self, entry, places: Places) -> str:
        raise NotImplementedError

    def keeps(self, document) -> bool:
        return False

    def run(self, data, rank: int = 0, world_size: int = 1):
        listed, places = self.listed(rank), Places(self.places_folder)
        try:
            with self.removed:
                for position, document in enumerate(data):
                    entry = listed.get(position)
                    if entry is not None and not self.keeps(document):
                        document.metadata.update(reason=self.reason, detail=self.detail(entry, places))
                        self.removed.write(document, rank)
                        self.stat_update(f"removed: {self.reason}")
                        continue
                    yield document
        finally:
            places.close()
