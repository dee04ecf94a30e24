"""The first step of the pipeline: a stage's training sources, read by the recipe's own format
plugins (so any format a recipe can train on can be cleaned here), as datatrove ``Document``s.

The stage's files, in recipe order, are cut into ``world_size`` contiguous runs, one per task: task 0
reads the first files, the last task the last ones. So task order is recipe order, and "keep the first
occurrence" (exact and near dedup) means the same here as in ``recipes prepare``. One file is never
split between tasks: a corpus in one large file runs in one task; cut it into several files first.
"""

from __future__ import annotations

from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep

from recipes_datatrove.tally import Tally


def task_files(sources, rank: int, world_size: int) -> list[tuple[int, str]]:
    """(source index, file) pairs of the task ``rank``: a contiguous run of the stage's files."""
    files = [(index, str(path)) for index, source in enumerate(sources) for path in source.files]
    start, end = len(files) * rank // world_size, len(files) * (rank + 1) // world_size
    return files[start:end]


class ReadSources(PipelineStep):
    """Each record a source's format yields, as a document: ``text`` (the record's), ``id`` and
    ``metadata["place"]`` (``file:line`` where the format says it, else ``file#n``), ``metadata["source"]``
    (the source's name). Bad records follow the stage's ``on_bad_record``; skipped ones are counted."""

    name = "recipes: read the stage's sources"
    type = "📖 - READER"

    def __init__(self, stage, counts_folder: str):
        super().__init__()
        self.stage = stage  # a StageCleaning (recipes.api): plain data and plugin providers, picklable
        self.counts_folder = counts_folder

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from recipes.api import bad_record_policy

        tally = Tally(self.counts_folder, "read", rank)
        with bad_record_policy(self.stage.on_bad_record, self.stage.max_bad_records) as bad:
            for index, path in task_files(self.stage.sources, rank, world_size):
                source = self.stage.sources[index]
                for number, record in enumerate(source.format.read(Path(path), source.options), 1):
                    place = record.get("_where") or f"{path}#{number}"
                    text = record["text"]
                    tally.add(source.name, "read", text)
                    self.stat_update("read")
                    metadata = {"source": source.name, "place": place, "task": rank}
                    yield Document(text=text, id=place, metadata=metadata)
            bad.check_share(sum(docs for docs, _ in tally.counts_of("read")) + bad.count)
        tally.bad_records(bad.count, bad.first)
        tally.save()
