"""How long `recipes run` takes on a plan that is already finished (nothing to train).

    python bench/rerun_speed.py [--repeat 5]

Runs the bundled demo once into a temporary run folder (trains: about a minute on CPU), then times
--repeat re-runs, each in a fresh process, and prints the median. Target (issue 20): under 1.5 s;
everything is decided (fingerprints, published files by sha256) before torch would be imported.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 1.5


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        command = [sys.executable, "-m", "recipes", "run", "demo", "-o", str(run_dir)]
        subprocess.run(command, check=True, capture_output=True)
        times, cpu = [], []
        for _ in range(args.repeat):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            times.append(time.perf_counter() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            assert done.stdout.count("skipped") == 2, done.stdout
        median = statistics.median(times)
        # CPU seconds of the re-run process: what it costs whatever else the machine runs
        print(f"re-run of a finished demo plan: median {median:.2f} s wall, {statistics.median(cpu):.2f} s CPU over "
              f"{args.repeat} runs (target < {TARGET} s): {'ok' if median < TARGET else 'SLOW'}; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
