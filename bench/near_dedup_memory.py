"""Near-dedup (plugins/recipes-near-dedup: rensa MinHash LSH) at scale: its memory per million documents
and its speed, and what each threshold finds on the planted corpus.

    python bench/near_dedup_memory.py [--sizes 100000,300000] [--chars 300] [--recall 1000] [--out FILE]

Memory: for each size, a fresh process streams that many generated documents (half Chinese, half
English, ``--chars`` characters each; every tenth a near copy of a recent one with 3% of its characters
changed, which goes and is not indexed) through the filter's ``check``, the texts never kept. It prints
the process's RSS and PSS (``/proc/self/smaps_rollup``) before the first document (imports done, the
index empty) and after the last, and the peak RSS (``VmHWM``). Per million documents = the growth
between the two sizes divided by the documents indexed between them, times a million: a linear
extrapolation from the measured sizes (the index grows by whole blocks and hash-table doublings, so a
single size's growth is a coarser estimate; both are printed).

Speed: CPU seconds of ``check`` per document, against the baseline measured in the same process on the
same documents: exact dedup's normalisation and 8-byte digest (``recipes.data.normalize``), so the
ratio says what near dedup adds to the cheapest cleaning (the machine's load moves both alike).

Decontamination (``--decontamination N``): the index of N reference texts, its size, and its check's
CPU time per training document against the same exact-dedup baseline.

Recall (``--recall N``): ``tests/planted_corpus.py`` with N distinct documents and N/2 near copies per
language (2-5% of the characters changed, English edited word by word), each threshold's share of near
copies removed and distinct documents removed, with the default shingles.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "plugins" / "recipes-near-dedup"))


def memory() -> dict:
    """This process's RSS, peak RSS and PSS, in MiB."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    rollup = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        rollup[name] = value
    kib = lambda text: int(text.split()[0]) / 1024  # noqa: E731
    return {"rss": kib(status["VmRSS"]), "peak_rss": kib(status["VmHWM"]), "pss": kib(rollup["Pss"])}


class RensaIndex:
    """The baseline: rensa's own RMinHashLSH holding the same bands (its candidates taken as duplicates,
    unverified), with the same shingles and signatures."""

    def __init__(self, threshold: float):
        from rensa import RMinHashLSH
        from recipes_near_dedup.minhash import NearDuplicates

        self.ours = NearDuplicates(threshold=threshold)
        self.bands, self.rows = self.ours.bands, self.ours.rows
        self.lsh, self.count = RMinHashLSH(threshold, self.ours.perms, self.bands), 0

    def check(self, text: str, place: str):
        minhash = self.ours.signature(text)
        if self.lsh.query(minhash):
            return "candidate"
        self.lsh.insert(self.count, minhash)
        self.count += 1
        return None

    def __len__(self) -> int:
        return self.count


def child(size: int, chars: int, threshold: float, baseline: bool = False) -> dict:
    from planted_corpus import IDEOGRAPHS, near_copy, words
    from recipes.data.normalize import digest, normalize
    from recipes_near_dedup.minhash import NearDuplicates

    rng = random.Random(size)
    vocabulary = words(rng, 20000)
    index = RensaIndex(threshold) if baseline else NearDuplicates(threshold=threshold)
    index.check("warm-up " * 10, "")  # rensa's first call sets up its tables: not the index's growth
    before = memory()
    recent, near_time, exact_time, removed, total_chars = [], 0.0, 0.0, 0, 0
    for number in range(size):
        if number % 10 == 9 and recent:
            text = near_copy(rng, rng.choice(recent), 0.03)
        elif number % 2:
            text = "".join(rng.choices(IDEOGRAPHS, k=chars))
        else:
            text = " ".join(rng.choices(vocabulary, k=chars // 5))
        recent = (recent + [text])[-100:]
        total_chars += len(text)
        started = time.process_time()
        digest(normalize(text))
        middle = time.process_time()
        removed += index.check(text, f"corpus.jsonl:{number + 1}") is not None
        exact_time += middle - started
        near_time += time.process_time() - middle
    after = memory()
    return {"documents": size, "indexed": len(index), "removed": removed, "chars": total_chars,
            "bands": index.bands, "rows": index.rows, "before": before, "after": after,
            "near_seconds": near_time, "exact_seconds": exact_time}


def recall(count: int) -> list[dict]:
    import json as json_
    import tempfile

    from planted_corpus import plant
    from recipes_near_dedup.minhash import NearDuplicates

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        planted = plant(Path(folder), distinct=count, exact=0, near=count // 2, seed=5)
        documents = [(f"{path}:{line}", json_.loads(row)["text"]) for path in planted.files
                     for line, row in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)]
        for threshold in (0.5, 0.6, 0.7, 0.8):
            index = NearDuplicates(threshold=threshold)
            gone = {place for place, text in documents if index.check(text, place)}
            row = {"threshold": threshold, "bands": index.bands, "rows": index.rows,
                   "distinct_removed": sum(p in gone for p in planted.distinct)}
            for language in ("zh", "en"):
                near = [p for p in planted.near if f"/{language}.jsonl" in p]
                row[language] = sum(p in gone for p in near) / len(near)
                hard = [p for p in near if planted.edits[p] >= 0.04]
                row[f"{language}_4to5"] = sum(p in gone for p in hard) / len(hard)
            rows.append(row)
    return rows


def decontamination(count: int) -> str:
    """Decontamination's index of ``count`` reference texts and its check's CPU time per training
    document (10 x ``count`` documents of 300 characters, none contaminated: every n-gram looked up),
    against exact dedup's digest of the same documents."""
    from planted_corpus import chinese_document, english_document
    from recipes.data.contamination import build_index
    from recipes.data.normalize import digest, normalize

    rng = random.Random(1)
    references = [english_document(rng, 600) if i % 2 else chinese_document(rng, 300) for i in range(count)]
    index = build_index([("eval set", references)])
    documents = [english_document(rng, 300) if i % 2 else chinese_document(rng, 300) for i in range(10 * count)]
    started = time.process_time()
    found = sum(index.match(text) is not None for text in documents)
    middle = time.process_time()
    for text in documents:
        digest(normalize(text))
    ended = time.process_time()
    chars = sum(map(len, documents))
    return (f"decontamination: {len(index.hashes):,} reference n-grams from {count:,} texts "
            f"({(index.hashes.nbytes + index.owners.nbytes) / 2**20:.1f} MiB); {len(documents):,} training documents "
            f"checked, {found} matched: {(middle - started) / len(documents) * 1e6:.0f} CPU-us/document "
            f"({chars / (middle - started) / 1e6:.2f} M chars/CPU-s), exact digest "
            f"{(ended - middle) / len(documents) * 1e6:.1f} CPU-us/document: decontamination/exact "
            f"{(middle - started) / (ended - middle):.1f}x")


def _line(result: dict, name: str) -> str:
    size = result["documents"]
    grown = {k: result["after"][k] - result["before"][k] for k in ("rss", "pss")}
    return (f"{name}: {size:,} documents ({result['indexed']:,} indexed, {result['removed']:,} removed; "
            f"{result['bands']} bands x {result['rows']} rows): RSS {result['before']['rss']:.0f} -> "
            f"{result['after']['rss']:.0f} MiB (peak {result['after']['peak_rss']:.0f}), PSS "
            f"{result['before']['pss']:.0f} -> {result['after']['pss']:.0f} MiB; growth per million indexed: "
            f"RSS {grown['rss'] / result['indexed'] * 1e6:,.0f} MiB, PSS {grown['pss'] / result['indexed'] * 1e6:,.0f} "
            f"MiB; check {result['near_seconds'] / size * 1e6:.0f} CPU-us/document "
            f"({result['chars'] / result['near_seconds'] / 1e6:.2f} M chars/CPU-s), exact digest "
            f"{result['exact_seconds'] / size * 1e6:.1f} CPU-us/document: near/exact "
            f"{result['near_seconds'] / result['exact_seconds']:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,300000")
    parser.add_argument("--chars", type=int, default=300)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--recall", type=int, default=1000)
    parser.add_argument("--decontamination", type=int, default=1000, help="reference texts (0: skip)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rensa", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.chars, args.threshold, args.rensa)))
        return
    lines = [f"$ python bench/near_dedup_memory.py --sizes {args.sizes} --chars {args.chars} "
             f"--threshold {args.threshold} --recall {args.recall} --decontamination {args.decontamination}",
             f"load average before: {Path('/proc/loadavg').read_text().split()[:3]}"]
    runs = {"rensa's RMinHashLSH (baseline)": [], "ours": []}
    for size in (int(s) for s in args.sizes.split(",") if s):
        for (name, found), variant in zip(runs.items(), (["--rensa"], [])):
            done = subprocess.run([sys.executable, __file__, "--child", str(size), "--chars", str(args.chars),
                                   "--threshold", str(args.threshold)] + variant, capture_output=True, text=True,
                                  check=True)
            found.append(json.loads(done.stdout.strip().splitlines()[-1]))
            lines.append(_line(found[-1], name))
    for name, found in runs.items():
        if len(found) >= 2:
            first, last = found[0], found[-1]
            docs = last["indexed"] - first["indexed"]
            for kind in ("rss", "pss"):
                slope = (last["after"][kind] - first["after"][kind]) / docs * 1e6
                lines.append(f"{name}: {kind.upper()} per million indexed documents, extrapolated linearly between "
                             f"{first['documents']:,} and {last['documents']:,} documents: {slope:,.0f} MiB")
    if args.recall:
        lines.append(f"recall on the planted corpus ({args.recall} distinct + {args.recall // 2} near copies per "
                     "language, 2-5% of characters changed):")
        for row in recall(args.recall):
            lines.append(f"  threshold {row['threshold']} ({row['bands']} bands x {row['rows']} rows): near copies "
                         f"removed zh {row['zh']:.1%} (4-5% changed: {row['zh_4to5']:.1%}), en {row['en']:.1%} "
                         f"(4-5%: {row['en_4to5']:.1%}); distinct documents removed {row['distinct_removed']}")
    if args.decontamination:
        lines.append(decontamination(args.decontamination))
    lines.append(f"load average after: {Path('/proc/loadavg').read_text().split()[:3]}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
