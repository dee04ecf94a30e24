"""Cleaning a training source while it is tokenized: what is checked, where, and in which order.

For each record of a source (a document, or an SFT conversation's ``role: content`` text), in the
tokenizing worker processes (``screen``):

1. normalisation (``normalize``: NFKC and whitespace, ``recipes.data.normalize``) of what the checks
   see, and of the trained text with ``normalize = "text"`` (documents only);
2. the document checks, in order: the source's ``filters`` (``DocumentFilter``s of scope
   "document", rebuilt in each worker from their names and options, so nothing has to be pickled)
   and then the stage-wide built-in checks in ``Cleaning.checks``; the first that objects removes
   the record, under its reason;
3. the 8-byte digest of the normalised text.

Then in the main process, in recipe order (``recipes.data.removals.settle``): exact dedup on the
digests against everything the stage's earlier sources and this source kept (``recipes.data.dedup``),
and the corpus-scope filters (``dedup = "near"``: the filter ``near_dedup``, one instance per stage;
``recipes.data.replay`` feeds it an earlier source whose store was found ready). The first
occurrence is kept. A removed record's tokens are counted (tokenized like a kept one).

Adding a built-in document check (decontamination, say) is one call where the stage's cleaning is
made (``stage_cleaning`` below): ``cleaning.with_check(reason, check, identity)``,
with ``check(text, place) -> None | detail`` a picklable object (a tokenizing worker started by
spawn, on a machine with a live CUDA context, receives it pickled; its read-only index is built
once per stage and shared by the workers) and ``identity`` a string that changes whenever what the
check removes may change (it goes into the store key).
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

from recipes.data.normalize import conversation_text, digest, normalize

PREVIEW = 400  # characters of a removed record kept as its example
EXACT = "exact"


@dataclass(frozen=True)
class Cleaning:
    """A training source's cleaning settings, as the store key and the workers see them."""

    stage: str
    source: str
    dedup: str = EXACT  # "none", "exact", "near"
    near_threshold: float = 0.5
    normalize: str = "checks"  # "checks", "text", "none"
    script: Optional[str] = None  # "cjk", "latin", None
    filters: tuple = ()  # (name, options as a dict), the filters turned on, in the recipe's order
    checks: tuple = ()  # (reason, check, identity): the stage's built-in document checks
    work_dir: Any = None  # a folder the filters may write to (set when the store is built)

    def with_check(self, reason: str, check: Callable[[str, str], Optional[str]], identity: str) -> "Cleaning":
        """The same cleaning with one more document check (removals counted under ``reason``)."""
        return replace(self, checks=self.checks + ((reason, check, identity),))

    def key(self, registry) -> dict:
        """What of the cleaning decides the store's content: settings, each filter's name, options and
        provider version, and each built-in check's identity."""
        from recipes.versions import provider_version

        filters = [{"name": name, "options": options, "provider": provider_version(registry.filters[name].make)}
                   for name, options in self.filters]
        if self.dedup == "near":
            near = registry.filters["near_dedup"]
            filters.append({"name": "near_dedup", "threshold": self.near_threshold,
                            "provider": provider_version(near.make)})
        return {"dedup": self.dedup, "normalize": self.normalize, "script": self.script, "filters": filters,
                "checks": [[reason, identity] for reason, _, identity in self.checks]}


def source_cleaning(spec, stage: str, name: str) -> Cleaning:
    """A recipe's data source (``recipes.config.data_source.DataSource``) -> its ``Cleaning``."""
    filters = tuple((filter_name, {} if options is True else dict(options))
                    for filter_name, options in spec.filters.items() if options is not False)
    return Cleaning(stage, name, spec.dedup, spec.near_threshold, spec.normalize, spec.script, filters)


def context(cleaning: Cleaning):
    from recipes.plugins.hookspecs import FilterContext

    cjk = None if cleaning.script is None else cleaning.script == "cjk"
    return FilterContext(cleaning.stage, cleaning.source, cleaning.work_dir, cjk, cleaning.script)


def document_checks(cleaning: Cleaning, registry=None) -> list[tuple[str, Callable]]:
    """(reason, check) of the source's document-scope filters, then the stage's built-in checks."""
    from recipes.plugins.hookspecs import DOCUMENT
    from recipes.plugins.registry import get_registry

    registry = registry or get_registry()
    checks = []
    for name, options in cleaning.filters:
        provider = registry.filters[name]
        if provider.scope == DOCUMENT:
            checks.append((name, provider.make(provider.options_model.model_validate(options), context(cleaning))))
    return checks + [(reason, check) for reason, check, _ in cleaning.checks]


def corpus_checks(cleaning: Cleaning, registry, shared: dict) -> list[tuple[str, Callable]]:
    """(reason, check) of the source's corpus-scope filters, made once per stage (``shared``, by name:
    every source with ``dedup = "near"`` goes through the same ``near_dedup``)."""
    from recipes.plugins.hookspecs import CORPUS

    near = cleaning.dedup == "near"
    wanted = [(name, options) for name, options in cleaning.filters
              if registry.filters[name].scope == CORPUS and not (near and name == "near_dedup")]
    if near:  # its other options (shingle, num_perm...) from a filters.near_dedup table, when given
        wanted.append(("near_dedup", {**dict(cleaning.filters).get("near_dedup", {}), "threshold": cleaning.near_threshold}))
    checks = []
    for name, options in wanted:
        reason = "near" if name == "near_dedup" else name
        key = (name, repr(sorted(options.items())))
        if key not in shared:
            provider = registry.filters[name]
            shared[key] = provider.make(provider.options_model.model_validate(options), context(cleaning))
        checks.append((reason, shared[key]))
    return checks


@dataclass
class Screened:
    """One chunk after the document checks: the records to tokenize (``kept``, in order, with their
    ``digests``, ``places`` and the normalised ``texts``) and the removed ones (``removed``: reason,
    detail, place, preview, record)."""

    kept: list = field(default_factory=list)
    digests: list = field(default_factory=list)
    places: list = field(default_factory=list)
    texts: list = field(default_factory=list)
    removed: list = field(default_factory=list)


def screen(records: list, kind: str, cleaning: Cleaning | None, checks: list) -> Screened:
    """Normalise and check each record of a chunk (``records``: dicts with ``text``, or conversations)."""
    out = Screened()
    for record in records:
        place = record.get("_where", "") if isinstance(record, dict) else ""
        raw = record["text"] if kind == "documents" else conversation_text(record)
        text = raw if cleaning is None or cleaning.normalize == "none" else normalize(raw)
        if cleaning is not None and cleaning.normalize == "text" and kind == "documents":
            record = {**record, "text": text}
        verdict = next(((reason, detail) for reason, check in checks
                        if (detail := check(text, place)) is not None), None)
        if verdict is not None:
            out.removed.append((verdict[0], verdict[1], place, raw[:PREVIEW], record))
            continue
        out.kept.append(record)
        out.digests.append(digest(text))
        out.places.append(place)
        out.texts.append(text)
    return out


def stage_cleaning(stage, say=None) -> list:
    """Each training source's ``Cleaning`` (None where it is kept whole). The place to add a stage-wide
    built-in document check: ``[c.with_check(reason, check, identity) for c in cleanings]``. Built in:
    decontamination (``recipes.data.contamination``, reason ``contaminated``)."""
    from recipes.data.contamination import decontaminated

    return decontaminated(stage, [getattr(source, "cleaning", None) for source in stage.sources], say)


@contextmanager
def cleaning_state(cleaning: Cleaning | None, earlier: list, corpus: dict, work: Path):
    """(cleaning with its work folder, the digests the stage's ``earlier`` stores kept, the corpus-scope
    checks) while one source's store is built; the work folder is removed afterwards."""
    if cleaning is None:
        yield None, None, []
        return
    import json

    import numpy as np

    from recipes.data.dedup import SeenDigests
    from recipes.data.dedup import kept_digests
    from recipes.plugins.registry import get_registry

    folder = Path(work) / cleaning.source
    cleaning = replace(cleaning, work_dir=folder)
    seen = SeenDigests(folder / "seen")
    try:
        for store in earlier:
            shards = json.loads((Path(store) / "store.json").read_text())["shards"]
            for digests in kept_digests(store, shards):
                seen.first_seen(np.asarray(digests))
        yield cleaning, seen, corpus_checks(cleaning, get_registry(), corpus)
    finally:
        shutil.rmtree(folder / "seen", ignore_errors=True)


def removal_lines(info: dict) -> list[str]:
    """What cleaning removed from a store, a line per reason (none when nothing was removed)."""
    removed = info.get("removed") or {}
    if not removed:
        return []
    total = sum(count["documents"] for count in removed.values())
    parts = ", ".join(f"{reason} {count['documents']:,} ({count['tokens']:,} tokens)"
                      for reason, count in sorted(removed.items()))
    return [f"cleaning removed {total:,} of {info['records']:,} records: {parts}"]
