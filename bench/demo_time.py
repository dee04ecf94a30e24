"""Wall time of a bundled recipe's chain, as a user runs it: `recipes run demo`, then `recipes export`.

    python bench/demo_time.py [--runs 3] [--recipe demo|demo_qlora]

Each run is a fresh `recipes run RECIPE -o TMP` process (the tiny model already built and cached, so
the first run does not pay for building it), then a fresh `recipes export TMP --to TMP/export`
process (the last stage's merged model); measured: each command's wall time and peak RSS
(``os.wait4``'s ``ru_maxrss``), and each stage's wall and training seconds from
``stages/*/stage.json`` (``wall_seconds`` is the run's "done in X s"). Printed: per-run rows and the
medians.
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


def timed(command: list[str], log: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB) of one command, its output in ``log``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started = time.perf_counter()
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{log.read_text()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024 ** 2


def one_run(folder: Path, recipe: str) -> dict:
    seconds, rss = timed([str(RECIPES), "run", recipe, "-o", str(folder / "run")], folder / "output.txt")
    stages = {p.parent.name: json.loads(p.read_text())
              for p in sorted((folder / "run" / "stages").glob("*/stage.json"), key=lambda p: p.stat().st_mtime)}
    export, _ = timed([str(RECIPES), "export", str(folder / "run"), "--to", str(folder / "export")],
                      folder / "export.txt")
    return {"seconds": seconds, "peak_rss_gb": rss, "export_seconds": export,
            "stages": {name: r for name, r in stages.items()}}


def described(name: str, r: dict) -> str:
    """A stage's figures as its stage.json holds them: steps, times, loss, held-out perplexity, peak memory."""
    text = f"{name} {r['steps']} steps, {r.get('wall_seconds') or 0:.1f} s (training {r['train_seconds']:.1f} s)"
    if r.get("first_loss") is not None:
        text += f", loss {r['first_loss']:.2f} -> {r['final_loss']:.2f}"
    if r.get("eval_perplexity_before") is not None:
        text += f", held-out perplexity {r['eval_perplexity_before']:,.0f} -> {r['eval_perplexity_after']:,.0f}"
    if r.get("peak_memory_bytes"):
        text += f", peak memory {r['peak_memory_bytes'] / 1024 ** 3:.2f} GB"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--recipe", default="demo", help="a bundled recipe on the tiny model (demo, demo_qlora)")
    options = parser.parse_args()
    subprocess.run([str(RECIPES), "validate", options.recipe], check=True, capture_output=True)
    from qwen_recipes.tiny import tiny_qwen2_path

    tiny_qwen2_path()  # built once here, not inside the first timed run
    print(f"bench: {' '.join(sys.argv)}\nload average before: {os.getloadavg()}; {os.cpu_count()} CPUs")
    rows = []
    for run in range(options.runs):
        with tempfile.TemporaryDirectory(prefix="demo_time_") as folder:
            row = one_run(Path(folder), options.recipe)
        rows.append(row)
        stages = "; ".join(described(name, r) for name, r in row["stages"].items())
        print(f"run {run + 1}: {options.recipe} {row['seconds']:.1f} s wall, peak RSS {row['peak_rss_gb']:.2f} GB; "
              f"export {row['export_seconds']:.1f} s\n  stages: {stages}", flush=True)
    print(f"load average after: {os.getloadavg()}")
    print(f"median of {len(rows)}: {options.recipe} {statistics.median(r['seconds'] for r in rows):.1f} s wall, "
          f"peak RSS {statistics.median(r['peak_rss_gb'] for r in rows):.2f} GB; "
          f"export {statistics.median(r['export_seconds'] for r in rows):.1f} s")


if __name__ == "__main__":
    main()
