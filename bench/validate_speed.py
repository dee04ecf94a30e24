"""How long `recipes validate` takes on each bundled recipe, against baselines measured in the same run.

    python bench/validate_speed.py [--repeat 7]

Each command runs in a fresh process (what a user pays at the prompt); the median of --repeat runs
is printed. Baselines: the bare interpreter (`python -c pass`) and `import transformers` (what a
tool that validates after importing its training stack pays before the first check).
Target (issue 3): under 0.5 s wall for a bundled recipe.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

TARGET = 0.5


def wall(command: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    python = sys.executable
    interpreter = wall([python, "-c", "pass"], args.repeat)
    transformers = wall([python, "-c", "import transformers, torch"], max(3, args.repeat // 2))
    print(f"baseline python -c pass:             {interpreter:.3f} s")
    print(f"baseline import transformers, torch: {transformers:.3f} s")
    worst = 0.0
    for recipe in ("demo", "domain_qwen", "domain_qwen_qlora"):
        seconds = wall([python, "-m", "recipes", "validate", recipe], args.repeat)
        worst = max(worst, seconds)
        print(f"recipes validate {recipe:<18} {seconds:.3f} s  = {seconds / interpreter:4.1f} x bare python, "
              f"{seconds / transformers:.2f} x importing transformers+torch, {seconds / TARGET:.2f} x the 0.5 s target")
    print(f"worst: {worst:.3f} s -> {'meets' if worst < TARGET else 'MISSES'} the {TARGET} s target")


if __name__ == "__main__":
    main()
