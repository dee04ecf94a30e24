"""bench/gpu_check.py: its --dry-run runs every row's code path at toy size on CPU (our StageRun for
LoRA, QLoRA through bitsandbytes and SFT with packing, the HF Trainer + PEFT baseline, packed against
padded loss and gradients, a two-stage `recipes run`), prints the targets as thresholds and passes;
its verdict never counts a SKIP as a proof."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_verdict_is_proven_only_when_every_target_row_passed():
    module = gpu_check()
    table = module.Table()
    for name in module.TARGETS:
        table.add(name, "x", "y", "PASS")
    assert table.verdict(dry=False).startswith("PROVEN")
    table.rows[4]["status"] = "SKIP"  # e.g. flash-attn not importable: no proof of that row
    assert table.verdict(dry=False) == ("NOT PROVEN: skipped (a skip is no proof): "
                                        "packed = unpacked (flash_attention_2)")
    table.rows[4]["status"] = "PASS"
    table.rows.pop(0)  # a check that crashed before adding its row
    assert table.verdict(dry=False) == "NOT PROVEN: not reached: lora peak memory"
    assert table.verdict(dry=True).startswith("dry run: NOT PROVEN")  # a dry run proves nothing


def test_gpu_check_dry_run_runs_every_row_and_passes(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", "--json", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "# gpu_check on none (dry run on CPU, toy size, fp32) --dry-run" in done.stdout
    report = json.loads(out.read_text())
    rows = {row["check"]: row for row in report["rows"]}
    assert list(rows) == list(gpu_check().TARGETS)
    status = {name: row["status"] for name, row in rows.items()}
    assert status == {"lora peak memory": "SKIP", "qlora peak memory": "SKIP", "tokens/s ours / HF+PEFT": "SKIP",
                      "packed = unpacked (sdpa)": "PASS", "packed = unpacked (flash_attention_2)": "SKIP",
                      "2-stage recipes run": "PASS", "stage 2 peak excludes stage 1": "SKIP"}
    # the thresholds are the targets, printed; the skipped rows still ran their code
    assert rows["lora peak memory"]["threshold"].startswith("<= 20 GB")
    assert rows["qlora peak memory"]["threshold"].startswith("<= 9 GB")
    assert rows["lora peak memory"]["result"].startswith("ran (2 steps")
    assert rows["qlora peak memory"]["result"].startswith("ran (2 steps")
    assert "plan " in rows["qlora peak memory"]["info"]
    assert rows["tokens/s ours / HF+PEFT"]["threshold"].startswith(">= 1.1x")
    assert "HF+PEFT" in rows["tokens/s ours / HF+PEFT"]["info"] and " tok/s" in rows["tokens/s ours / HF+PEFT"]["info"]
    assert "merged models of ['one', 'two']" in rows["2-stage recipes run"]["result"]
    assert report["verdict"].startswith("dry run: NOT PROVEN") and report["verdict"] in done.stdout
    assert report["header"]["transformers"] and report["dry_run"] is True


def test_the_gpu_bundle_carries_every_dependency_the_gpu_image_lacks():
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_bundle.sh"), "--check", sys.executable],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every dependency in pyproject.toml is carried or in the GPU image" in done.stdout
