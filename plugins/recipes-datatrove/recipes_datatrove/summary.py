"""The last step (one task): every task's counts added up per source and reason, checked, and written
beside the shards, with what to put in the recipe so that ``recipes prepare`` tokenizes them.

- ``removed.json``: per source, the documents and characters read, kept and removed by each reason
  (``exact``, ``near``, each filter's name), and the stage's bad records skipped;
- ``recipe-fragment.toml``: the stage's ``[[stages.data]]`` tables over the shards (same names and
  mix), to replace the stage's own;
- ``PREPARE.md``: the counts and the next command.

The counts must add up (read = kept + removed, per source): a task whose output went missing would
otherwise lose documents without a trace, so a mismatch fails the step.
"""

from __future__ import annotations

import json

from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep

from recipes_datatrove.tally import load_all


def add_up(tallies: list[dict], names: list[str]) -> tuple[dict, dict]:
    """(per source: read, kept, removed by reason; the bad records skipped, over the stage)."""
    sources = {name: {"read": [0, 0], "kept": [0, 0], "removed": {}} for name in names}
    bad = {"count": 0, "first": []}
    for tally in tallies:
        for name, by_reason in tally["counts"].items():
            for reason, (docs, chars) in by_reason.items():
                slot = sources[name] if reason in ("read", "kept") else sources[name]["removed"]
                total = slot.setdefault(reason, [0, 0])
                total[0] += docs
                total[1] += chars
        bad["count"] += tally["bad_records"]["count"]
        bad["first"] = (bad["first"] + tally["bad_records"]["first"])[:5]
    return sources, bad


def check_conservation(sources: dict) -> None:
    for name, counts in sources.items():
        removed = sum(docs for docs, _ in counts["removed"].values())
        if counts["read"][0] != counts["kept"][0] + removed:
            raise RuntimeError(f"source {name!r}: {counts['read'][0]} documents read but {counts['kept'][0]} kept "
                               f"and {removed} removed: a task's output is missing; run the command again")


def as_json(sources: dict) -> dict:
    def pair(docs_chars):
        return {"documents": docs_chars[0], "characters": docs_chars[1]}

    return {name: {"read": pair(c["read"]), "kept": pair(c["kept"]),
                   "removed": {reason: pair(v) for reason, v in sorted(c["removed"].items())}}
            for name, c in sources.items()}


def toml_value(value) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, bool) else str(value).lower()


def fragment(stage, out: str, sources: dict) -> str:
    lines = [f"# Stage {stage.name!r} of {stage.recipe}, cleaned by recipes-datatrove: these tables replace",
             "# the stage's [[stages.data]] tables. The filters and decontamination already ran; exact dedup",
             "# here is a cheap check that finds nothing (a source with dedup = \"none\" keeps \"none\")."]
    for source in stage.sources:
        if not sources[source.name]["kept"][0]:
            lines += ["", f"# {source.name}: every document was removed (see removed.json)"]
            continue
        normalize = "checks" if source.cleaning.normalize == "text" else source.cleaning.normalize
        table = {"name": source.name, "path": f"{out}/shards/{source.name}/*.jsonl.gz", "format": "text",
                 "dedup": "none" if source.cleaning.dedup == "none" else "exact", "normalize": normalize,
                 **source.mix}
        lines += ["", "[[stages.data]]"] + [f"{key} = {toml_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def note(stage, out: str, sources: dict) -> str:
    read = sum(c["read"][0] for c in sources.values())
    kept = sum(c["kept"][0] for c in sources.values())
    reasons: dict[str, int] = {}
    for counts in sources.values():
        for reason, (docs, _) in counts["removed"].items():
            reasons[reason] = reasons.get(reason, 0) + docs
    removed = ", ".join(f"{reason} {docs}" for reason, docs in sorted(reasons.items())) or "none"
    return (f"# Stage {stage.name!r} of {stage.recipe}, cleaned by recipes-datatrove\n\n"
            f"{read} documents read, {kept} kept; removed: {removed} (per source: removed.json; the removed\n"
            f"documents themselves, with reason and detail: removed/<reason>/).\n\n"
            f"Shards: {out}/shards/<source>/*.jsonl.gz (JSON lines: `text`, and `metadata.place`, where the\n"
            f"document came from). To train on them, replace the stage's [[stages.data]] tables with\n"
            f"recipe-fragment.toml (a `text` source per cleaned source, same names and mix), then run\n\n"
            f"    recipes prepare RECIPE --stage {stage.name}\n\n"
            f"which tokenizes them into the token store (`recipes run` then reuses it). Its exact dedup and\n"
            f"decontamination find nothing left to remove.\n")


class Summary(PipelineStep):
    name = "recipes: counts, removed.json, recipe fragment"
    type = "📊 - STATS"

    def __init__(self, stage, out: str):
        super().__init__()
        self.stage, self.out = stage, out

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        sources, bad = add_up(load_all(f"{self.out}/work/counts"), [s.name for s in self.stage.sources])
        check_conservation(sources)
        folder = get_datafolder(self.out)
        report = {"recipe": self.stage.recipe, "stage": self.stage.name, "sources": as_json(sources),
                  "bad_records": bad,
                  "shards": {name: f"shards/{name}/*.jsonl.gz" for name, c in sources.items() if c["kept"][0]}}
        with folder.open("removed.json", "wt") as handle:
            json.dump(report, handle, indent=2, ensure_ascii=False)
        with folder.open("recipe-fragment.toml", "wt") as handle:
            handle.write(fragment(self.stage, self.out, sources))
        with folder.open("PREPARE.md", "wt") as handle:
            handle.write(note(self.stage, self.out, sources))
        return iter(())
