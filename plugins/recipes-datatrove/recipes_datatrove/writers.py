"""Where documents go between and after the steps, each write counted (``tally``).

- ``Removed``: a removed document, with its reason and detail, into ``removed/<reason>/<rank>.jsonl.gz``
  (nothing disappears without a trace: the summary counts these, and they are the examples to read).
- ``Shards``: a kept document, into ``shards/<source>/<rank>-<phase>.jsonl.gz``, what ``recipes prepare``
  then tokenizes (one folder per source, so the recipe keeps its sources, names and weights).
- ``intermediate`` and ``RankShard``: the documents between two steps that must see the same stream
  (a dedup's signature step and its dropping step), one file per task, read back by the same task.
- ``SplitOff``: sends the documents of some sources to a writer and passes the others on (after exact
  dedup, the sources with ``dedup = "none"`` or ``"exact"`` are written out; ``"near"`` ones go on).
"""

from __future__ import annotations

import orjson
from datatrove.data import Document
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.writers.jsonl import JsonlWriter

from recipes_datatrove.tally import Tally


def row(writer, document: Document) -> dict:
    """A document as a line (datatrove's own adapter leaves out empty values, an empty text among them,
    which a `text` source could then not read)."""
    return {"text": document.text, "id": document.id, "metadata": document.metadata}


class _Counted(JsonlWriter):
    def __init__(self, folder: str, filename: str, counts_folder: str, phase: str):
        super().__init__(folder, output_filename=filename, adapter=row)
        self.counts_folder, self.phase = counts_folder, phase
        self.tally: Tally | None = None

    def reason(self, document: Document) -> str:
        raise NotImplementedError

    def write(self, document: Document, rank: int = 0, **kwargs):
        if "as_read" in document.metadata:  # the steps between saw the normalised text (``cleaning``)
            document.text = document.metadata.pop("as_read")
        if self.tally is None:
            self.tally = Tally(self.counts_folder, self.phase, rank)
        self.tally.add(document.metadata["source"], self.reason(document), document.text)
        super().write(document, rank, **kwargs)

    def close(self):
        super().close()
        if self.tally is not None:
            self.tally.save()


class Removed(_Counted):
    """Removed documents, under their ``metadata["reason"]`` (with its ``["detail"]``)."""

    def __init__(self, out: str, counts_folder: str, phase: str):
        super().__init__(f"{out}/removed", "${reason}/${rank}.jsonl.gz", counts_folder, f"removed-{phase}")

    def reason(self, document: Document) -> str:
        return document.metadata["reason"]


class Shards(_Counted):
    def __init__(self, out: str, counts_folder: str, phase: str):
        super().__init__(f"{out}/shards", "${source}/${rank}-" + phase + ".jsonl.gz", counts_folder, f"kept-{phase}")

    def reason(self, document: Document) -> str:
        return "kept"


def intermediate(folder: str) -> JsonlWriter:
    return JsonlWriter(folder, output_filename="${rank}.jsonl.gz", adapter=row)


class RankShard(PipelineStep):
    """The documents that this same task wrote into ``folder`` in an earlier step, in their order (a
    task that wrote none has no file: it reads nothing)."""

    name = "recipes: read back this task's documents"
    type = "📖 - READER"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        folder, name = get_datafolder(self.folder), f"{rank:05d}.jsonl.gz"
        if not folder.exists(name):
            return
        with folder.open(name, "rt", compression="gzip") as handle:
            for line in handle:
                values = orjson.loads(line)
                self.stat_update("read")
                yield Document(text=values["text"], id=values["id"], metadata=values["metadata"])


class SplitOff(PipelineStep):
    """Documents of the sources named in ``sources`` go to ``writer``; the others pass on."""

    name = "recipes: route by the source's dedup setting"
    type = "🔀 - ROUTER"

    def __init__(self, sources: set[str], writer: JsonlWriter):
        super().__init__()
        self.sources, self.writer = frozenset(sources), writer

    def run(self, data, rank: int = 0, world_size: int = 1):
        with self.writer:
            for document in data:
                if document.metadata["source"] in self.sources:
                    self.writer.write(document, rank)
                else:
                    yield document
