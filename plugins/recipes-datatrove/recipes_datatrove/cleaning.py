"""The sources' cleaning as one datatrove step, the same as ``recipes prepare`` applies: each document's
text normalised (``normalize``), then the source's document checks (its ``filters``, each a
``DocumentFilter`` from the registry, built-in or a plugin's, then the stage's built-in checks), in the
order prepare runs them, the first that objects removing the document under its reason and detail.

The checks come from ``recipes.api.document_checks`` in each task (``make(options, context)`` once per
source and task), so any filter a plugin registers runs here without this package knowing it. A
filter of ``"corpus"`` scope keeps state across the whole stage in one process: the command refuses
it (near-duplicate removal, the one such check prepare adds itself, is datatrove's MinHash here).

The documents passed on carry the normalised text, which exact and near dedup compare; with
``normalize = "checks"`` (the default) the text as read rides along in ``metadata["as_read"]`` and is
what the shards get (``writers``), as prepare trains on the text as read.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from datatrove.pipeline.base import PipelineStep

from recipes_datatrove.writers import Removed


class Clean(PipelineStep):
    name = "recipes: normalise and filter"
    type = "🔻 - FILTER"

    def __init__(self, stage, removed: Removed, work: str):
        super().__init__()
        self.stage, self.removed, self.work = stage, removed, work

    def run(self, data, rank: int = 0, world_size: int = 1):
        from recipes.api import document_checks, normalize_text

        normalize = {source.name: source.cleaning.normalize for source in self.stage.sources}
        Path(self.work).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.work, prefix=f"filters-{rank:05d}-") as work_dir, self.removed:
            checks = {source.name: document_checks(source.cleaning, Path(work_dir)) for source in self.stage.sources}
            for document in data:
                source = document.metadata["source"]
                text = normalize_text(document.text) if normalize[source] != "none" else document.text
                reason = detail = None
                for name, check in checks[source]:  # the first that objects removes it, as in prepare
                    detail = check(text, document.metadata["place"])
                    if detail is not None:
                        reason = name
                        break
                if reason is not None:
                    document.metadata.update(reason=reason, detail=detail)
                    self.removed.write(document, rank)
                    self.stat_update(f"removed: {reason}")
                    continue
                if normalize[source] == "checks" and text != document.text:
                    document.metadata["as_read"] = document.text  # trained as read; deduplicated as checked
                document.text = text
                yield document
