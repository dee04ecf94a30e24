"""Wall time of the demo's two-stage chain, as a user runs it: `recipes run demo`.

    python bench/demo_time.py [--runs 3]

Each run is a fresh `recipes run demo -o TMP` process (the tiny model already built and cached, so
the first run does not pay for building it); measured: the command's wall time, its peak RSS
(``os.wait4``'s ``ru_maxrss``) and each stage's training seconds from ``stages/*/stage.json``.
Printed: per-run rows and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPES = Path(sys.executable).with_name("recipes")


def one_run(folder: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started = time.perf_counter()
    with open(folder / "output.txt", "w") as output:
        command = [str(RECIPES), "run", "demo", "-o"]
        process = subprocess.Popen([*command, str(folder / "run")], stdout=output, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"recipes run demo failed:\n{(folder / 'output.txt').read_text()[-3000:]}")
    stages = {p.parent.name: json.loads(p.read_text())["train_seconds"]
              for p in sorted((folder / "run" / "stages").glob("*/stage.json"))}
    return {"seconds": seconds, "peak_rss_gb": usage.ru_maxrss / 1024 ** 2, "train_seconds": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    subprocess.run([str(RECIPES), "validate", "demo"], check=True, capture_output=True)
    from qwen_recipes.tiny import tiny_qwen2_path

    tiny_qwen2_path()  # built once here, not inside the first timed run
    print(f"bench: {' '.join(sys.argv)}\nload average before: {os.getloadavg()}; {os.cpu_count()} CPUs")
    rows = []
    for run in range(options.runs):
        with tempfile.TemporaryDirectory(prefix="demo_time_") as folder:
            row = one_run(Path(folder))
        rows.append(row)
        stages = ", ".join(f"{name} {s:.1f} s" for name, s in row["train_seconds"].items())
        print(f"run {run + 1}: {row['seconds']:.1f} s wall, peak RSS {row['peak_rss_gb']:.2f} GB, training: {stages}",
              flush=True)
    print(f"load average after: {os.getloadavg()}")
    print(f"median of {len(rows)}: {statistics.median(r['seconds'] for r in rows):.1f} s wall, "
          f"peak RSS {statistics.median(r['peak_rss_gb'] for r in rows):.2f} GB")


if __name__ == "__main__":
    main()
