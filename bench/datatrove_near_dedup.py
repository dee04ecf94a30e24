"""The datatrove pipeline (recipes-datatrove, local executor) against the built-in path (recipes prepare
with recipes-near-dedup) on one planted corpus: what each removes, per reason, and which near copies.

    python bench/datatrove_near_dedup.py [--distinct 150] [--exact 30] [--near 100] [--threshold 0.5]
                                         [--tasks 4] [--workers 1]

The corpus is the plugin tests' (Chinese and English documents, exact copies, near copies with 2-5% of
their characters changed in three places, half copies that must stay). Counts come from the two
commands a user runs (`recipes-datatrove clean`, then `recipes data inspect --json` on the same
recipe); the near copies each path removed, document by document, from datatrove's removed/ files
and from the built-in near_dedup filter replayed in recipe order over the exact-deduplicated,
normalised texts (what prepare runs it on). Wall times are printed with their ratio: both run on
this machine in this run, so a loaded machine inflates both.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = """\
name = "bench"
[model]
path = "bundled:tiny-qwen2"
[[stages]]
name = "cpt"
kind = "pretrain"
"""
SOURCE = ('[[stages.data]]\nname = "{0}"\npath = "data/{0}-*.jsonl"\nformat = "text"\ndedup = "near"\n'
          'near_threshold = {1}\n')


def timed(command: list[str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started, done.stdout


def builtin_near(folder: Path, threshold: float) -> set[str]:
    """The near copies the built-in filter removes, replayed in recipe order after exact dedup."""
    from recipes.data.normalize import normalize
    from recipes_near_dedup.minhash import NearDuplicates

    seen, near, index = set(), set(), NearDuplicates(threshold, 128)
    for source in ("zh", "en"):
        for path in sorted((folder / "data").glob(f"{source}-*.jsonl")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                text = normalize(json.loads(line)["text"])
                if text in seen:
                    continue
                seen.add(text)
                if index.check(text, f"{path.name}:{number}") is not None:
                    near.add(f"{path.name}:{number}")
    return near


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distinct", type=int, default=150)
    parser.add_argument("--exact", type=int, default=30)
    parser.add_argument("--near", type=int, default=100)
    parser.add_argument("--threshold", type=float, default=0.5)  # the recipe's default near_threshold
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "plugins" / "recipes-datatrove" / "tests"))
    from datatrove_corpus import plant

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ.setdefault("RECIPES_CACHE", str(folder / "cache"))
        truth = {Path(p.place).name: p.kind for p in plant(folder / "data", distinct=args.distinct,
                                                             exact=args.exact, near=args.near)}
        (folder / "recipe.toml").write_text(RECIPE + "".join(SOURCE.format(name, args.threshold)
                                                             for name in ("zh", "en")), encoding="utf-8")
        bin_dir = Path(sys.executable).parent
        datatrove_s, _ = timed([str(bin_dir / "recipes-datatrove"), "clean", "recipe.toml", "--stage", "cpt", "--out",
                                "out", "--tasks", str(args.tasks), "--workers", str(args.workers)], folder)
        builtin_s, inspected = timed([str(bin_dir / "recipes"), "data", "inspect", "recipe.toml", "--json", "-n", "0"],
                                     folder)
        ours = json.loads((folder / "out" / "removed.json").read_text(encoding="utf-8"))["sources"]
        theirs = json.loads(inspected)["stages"][0]["removed"]
        removed = {}
        for path in (folder / "out" / "removed").glob("*/*.jsonl.gz"):
            for line in gzip.open(path, "rt"):
                row = json.loads(line)["metadata"]
                removed[Path(row["place"]).name] = row["reason"]
        near_dt = {place for place, reason in removed.items() if reason == "near"}
        near_builtin = builtin_near(folder, args.threshold)
    print(f"planted: {dict(Counter(truth.values()))}; near_threshold {args.threshold}")
    for name in ("zh", "en"):
        print(f"  {name}: datatrove removed {({k: v['documents'] for k, v in ours[name]['removed'].items()})}, "
              f"built-in (data inspect) removed {({k: v['documents'] for k, v in theirs[name].items()})}")
    planted_near = {place for place, kind in truth.items() if kind == "near"}
    print(f"near copies found: datatrove {len(near_dt & planted_near)}/{len(planted_near)}, built-in filter "
          f"{len(near_builtin & planted_near)}/{len(planted_near)}; both {len(near_dt & near_builtin)}, only datatrove "
          f"{len(near_dt - near_builtin)}, only built-in {len(near_builtin - near_dt)}")
    print(f"not a planted copy but removed: datatrove "
          f"{sum(truth[p] not in ('exact', 'near') for p in removed)}, built-in filter "
          f"{sum(truth[p] != 'near' for p in near_builtin)}")
    print(f"wall: recipes-datatrove clean {datatrove_s:.1f} s (--tasks {args.tasks} --workers {args.workers}); "
          f"recipes data inspect (prepare) {builtin_s:.1f} s; ratio {datatrove_s / builtin_s:.2f}")


if __name__ == "__main__":
    main()
