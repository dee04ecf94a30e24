"""`recipes prepare` with and without cleaning, on the same generated corpus, in one run.

    python bench/prepare_clean.py [--source DIR] [--sizes 100,400] [--rounds 2] [--workers 2]

The corpus (JSON lines, about SIZE MB each) is generated as ``bench/data_scale.py`` does, from
``--source`` (default ``../shared/data``: LLaMA-Factory's ``c4_demo.jsonl``; else the bundled
samples): each document made distinct by a counter and a shuffle of its sentences; then one document
in 20 is followed by an exact copy of an earlier one (re-spaced, so that only the normalisation makes
it a copy) and one in 50 by a boilerplate page (the same line repeated), so that cleaning has work.

Two recipes over the same file, each prepared into a fresh store of its own, alternating within each
round (``plain`` then ``clean``):

- ``plain``: ``dedup = "none"``, ``normalize = "none"``, no filter: today's prepare, tokenizing only;
- ``clean``: exact dedup (the default), NFKC and whitespace normalisation for the checks, and the
  built-in ``length``, ``script`` (Latin), ``repeated_lines`` and ``repeated_ngrams`` filters.

It prints per round the wall time, the CPU time of the process tree (from wait4) and the peak PSS of
the process tree (sampled every 0.1 s from /proc/*/smaps_rollup), the clean / plain ratios, what
cleaning removed (the prepare output), and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_scale import ROOT, SHARED, generate_pretrain, load, measure, source_documents  # noqa: E402

RECIPE = """[model]
path = "{model}"
[[stages]]
name = "s"
kind = "pretrain"
cutoff_len = 1024
[[stages.data]]
path = "{data}"
format = "text"
{cleaning}
"""
PLAIN = 'dedup = "none"\nnormalize = "none"'
CLEAN = ('script = "latin"\nfilters = {length = {min_chars = 50}, script = true, repeated_lines = true, '
         'repeated_ngrams = true}')


def plant(source: Path, target: Path) -> dict:
    """``source``'s documents, with a re-spaced copy of an earlier one after every 20th and a
    boilerplate page after every 50th; the counts planted."""
    rng, kept, planted = random.Random(1), [], {"copies": 0, "boilerplate": 0}
    with open(source, encoding="utf-8") as read, open(target, "w", encoding="utf-8") as write:
        for index, line in enumerate(read):
            write.write(line)
            if len(kept) < 5000:
                kept.append(json.loads(line)["text"])
            elif rng.random() < 0.01:
                kept[rng.randrange(len(kept))] = json.loads(line)["text"]
            if index % 20 == 19:
                copy = "  " + rng.choice(kept).replace(" ", "  ") + "\n"
                write.write(json.dumps({"text": copy}, ensure_ascii=False) + "\n")
                planted["copies"] += 1
            if index % 50 == 49:
                page = "\n".join(["Click here to subscribe to our newsletter for more offers."] * 12)
                write.write(json.dumps({"text": page}) + "\n")
                planted["boilerplate"] += 1
    return planted


def one(work: Path, name: str, recipe: Path, workers: int) -> dict:
    cache = work / f"cache-{name}"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "RECIPES_CACHE": str(cache), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    result = measure([sys.executable, "-m", "recipes", "prepare", str(recipe), "--workers", str(workers)], env)
    shutil.rmtree(cache, ignore_errors=True)
    return result


def run_size(megabytes: int, work: Path, model: Path, source: Path, workers: int, rounds: int) -> None:
    distinct, data = work / f"distinct-{megabytes}.jsonl", work / f"corpus-{megabytes}.jsonl"
    generate_pretrain(distinct, megabytes, source_documents(source))
    planted = plant(distinct, data)
    distinct.unlink()
    recipes = {}
    for name, cleaning in (("plain", PLAIN), ("clean", CLEAN)):
        recipes[name] = work / f"{name}.toml"
        recipes[name].write_text(RECIPE.format(model=model, data=data, cleaning=cleaning))
    print(f"\n{data.stat().st_size / 1e6:.0f} MB, planted {planted['copies']:,} copies and "
          f"{planted['boilerplate']:,} boilerplate pages; {load()}")
    print("| round | plain: wall (CPU), peak PSS | clean: wall (CPU), peak PSS | clean/plain wall (CPU) | "
          "clean/plain PSS | load before -> after |")
    print("|---|---|---|---|---|---|")
    ratios, peaks = [], []
    for number in range(1, rounds + 1):
        before = os.getloadavg()[0]
        plain, clean = (one(work, name, recipes[name], workers) for name in ("plain", "clean"))
        shown = lambda m: f"{m['seconds']:.1f} s ({m['cpu']:.0f} CPU-s), {m['pss'] / 1e9:.2f} GB"  # noqa: E731
        ratios.append(clean["seconds"] / plain["seconds"])
        peaks.append(clean["pss"])
        print(f"| {number} | {shown(plain)} | {shown(clean)} | {ratios[-1]:.2f} ({clean['cpu'] / plain['cpu']:.2f}) | "
              f"{clean['pss'] / plain['pss']:.2f} | {before:.2f} -> {os.getloadavg()[0]:.2f} |", flush=True)
        removed = [line.strip() for line in clean["output"].splitlines() if "cleaning removed" in line]
        print("  clean: " + "; ".join(removed), flush=True)
    print(f"median clean/plain wall {statistics.median(ratios):.2f}, largest clean peak PSS "
          f"{max(peaks) / 1e9:.2f} GB", flush=True)
    data.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SHARED if SHARED.is_dir() else ROOT / "qwen_recipes" / "data")
    parser.add_argument("--sizes", default="100", help="comma-separated sizes in MB")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    from qwen_recipes.tiny import tiny_qwen2_path

    model = tiny_qwen2_path()
    work = Path(tempfile.mkdtemp(prefix="prepare_clean-"))
    print(f"source {args.source}, {args.workers} workers; python {sys.version.split()[0]}; {load()}")
    try:
        for size in (int(s) for s in args.sizes.split(",") if s.strip()):
            run_size(size, work, model, args.source, args.workers, args.rounds)
        print(load())
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
