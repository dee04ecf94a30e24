"""The stage's cleaning as datatrove pipelines, in the order they must run, each with its task count.

1. ``clean`` (T tasks): read the sources (``reading``), normalise and filter (``cleaning``), then
   take the exact-dedup signatures.
2. ``exact-find`` (T tasks, one hash range each): the exact copies among all signatures (``exact``).
3. ``exact-drop`` (T tasks): each task drops its exact copies; sources with ``dedup =
   "none"`` or ``"exact"`` are written out; ``"near"`` ones go on, with MinHash signatures.
4. ``near-buckets`` (one task per LSH band): the candidate pairs of each band.
5. ``near-clusters`` (one task): the pairs verified and joined into clusters, the first of each kept
   (``near``).
6. ``near-drop`` (T tasks): each task drops its near copies and writes out what is left.
7. ``summary`` (one task): the counts, ``removed.json``, the note and the recipe fragment (``summary``).

Steps 4-6 are left out when no source asks for near dedup, 2-6 when none deduplicates at all. Every
folder is under ``out``: ``shards/`` and ``removed/`` stay, ``work/`` is what the steps pass on.
"""

from __future__ import annotations

from dataclasses import dataclass

from datatrove.pipeline.dedup.exact_dedup import ExactDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets

from recipes_datatrove.cleaning import Clean
from recipes_datatrove.exact import ExactCopies, ExactFind, exact_config
from recipes_datatrove.lsh import NearOptions, minhash_config
from recipes_datatrove.near import FirstKept, NearCopies, Signatures
from recipes_datatrove.places import PlaceIndex
from recipes_datatrove.reading import ReadSources
from recipes_datatrove.shingles import ScriptAwareTokenizer
from recipes_datatrove.summary import Summary
from recipes_datatrove.writers import RankShard, Removed, Shards, SplitOff, intermediate


@dataclass
class Step:
    name: str
    pipeline: list
    tasks: int


def near_settings(stage) -> NearOptions | None:
    """The near-dedup settings of the stage's ``dedup = "near"`` sources (one MinHash index serves them
    all, as one ``near_dedup`` filter does in prepare): ``near_threshold`` and a ``near_dedup`` table."""
    from recipes.api import RecipeError

    given = {source.name: NearOptions.model_validate({**dict(source.cleaning.filters).get("near_dedup", {}),
                                                      "threshold": source.cleaning.near_threshold})
             for source in stage.sources if source.cleaning.dedup == "near"}
    if len({options.model_dump_json() for options in given.values()}) > 1:
        listed = "; ".join(f"{name}: {options.model_dump()}" for name, options in given.items())
        raise RecipeError(f"stage {stage.name!r}: the sources with dedup = \"near\" differ in near_threshold or "
                          f"their near_dedup table ({listed}); one MinHash index serves them all here: give them "
                          "the same settings")
    return next(iter(given.values()), None)


def build_steps(stage, out: str, tasks: int) -> list[Step]:
    work, counts = f"{out}/work", f"{out}/work/counts"
    by_dedup = {mode: {s.name for s in stage.sources if s.cleaning.dedup == mode} for mode in ("none", "exact", "near")}
    clean = [ReadSources(stage, counts), Clean(stage, Removed(out, counts, "clean"), f"{work}/filters")]
    summary = Step("summary", [Summary(stage, out)], 1)
    if not by_dedup["exact"] | by_dedup["near"]:
        return [Step("clean", clean + [Shards(out, counts, "clean")], tasks), summary]
    config, signed, copies, places = (exact_config(), f"{work}/exact/signatures", f"{work}/exact/copies",
                                      f"{work}/exact/places")
    clean += [intermediate(f"{work}/cleaned"), PlaceIndex(places), ExactDedupSignature(signed, config, tasks)]
    steps = [Step("clean", clean, tasks), Step("exact-find", [ExactFind(signed, copies, config)], tasks)]
    drop = [RankShard(f"{work}/cleaned"),
            ExactCopies(copies, places, Removed(out, counts, "exact"), by_dedup["none"]),
            SplitOff(by_dedup["none"] | by_dedup["exact"], Shards(out, counts, "exact"))]
    near = near_settings(stage)
    if near is None:
        return steps + [Step("exact-drop", drop, tasks), summary]
    minhash = minhash_config(near)
    signatures, pairs, clusters = f"{work}/near/signatures", f"{work}/near/pairs", f"{work}/near/clusters"
    whole = f"{work}/near/whole"
    drop += [intermediate(f"{work}/unique"), PlaceIndex(f"{work}/near/places"),
             Signatures(signatures, whole, minhash, ScriptAwareTokenizer(near.shingle))]
    return steps + [
        Step("exact-drop", drop, tasks),
        Step("near-buckets", [MinhashDedupBuckets(signatures, pairs, config=minhash)], minhash.num_buckets),
        Step("near-clusters", [FirstKept(pairs, whole, clusters, minhash.num_buckets * minhash.hashes_per_bucket,
                                         near.threshold)], 1),
        Step("near-drop", [RankShard(f"{work}/unique"),
                           NearCopies(clusters, f"{work}/near/places", Removed(out, counts, "near")),
                           Shards(out, counts, "near")], tasks),
        summary,
    ]
