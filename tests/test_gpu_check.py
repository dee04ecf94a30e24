"""bench/gpu_check.py --dry-run: every check's code path at toy size on CPU (fp32), one table, exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_prints_one_table_and_runs_every_check():
    """A smoke test: the equality rows (chunked = standard, packed = padded, fp16 overflow) pass on their
    criterion; the tokens/s rows say only that their path ran (their criterion is a speed above 0)."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run"], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "gpu_check on CPU (dry run" in done.stdout
    checks = {line.split("|")[1].strip(): line.split("|")[4].strip() for line in table[2:]}
    for name in ("lora b1 tokens/s chunked", "qlora b1 tokens/s chunked", "chunked = standard loss",
                 "chunked = standard LoRA grads", "fp16 survives loss-scale overflow", "packed = padded loss (sdpa)",
                 "packed = padded loss (eager)", "2-stage tiny plan via recipes run"):
        assert checks.get(name) == "PASS", (name, done.stdout)
    assert checks["FSDP step, world size 1"] == "SKIP" and "FAIL" not in checks.values()
