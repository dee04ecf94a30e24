"""The same recipe in two processes on CPU (DDP over gloo, through torchrun): both stages complete,
the ranks split the data, only rank 0 publishes, a killed rank ends the run with a clear error, and a
re-run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import write
from test_resume import TWO_STAGES, Run, small_recipe


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_two_processes_kill_a_rank_and_resume(tmp_path, tiny_model):
    small_recipe(tmp_path)
    write(tmp_path / "chat.jsonl", "".join(json.dumps({"messages": [
        {"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]}) + "\n"
        for i in range(8)))
    text = (TWO_STAGES.replace("max_steps = 2", "num_train_epochs = 1").replace("save_steps = 100", "save_steps = 2")
            .replace('name = "chat"', 'name = "chat"\npacking = false'))
    recipe = write(tmp_path / "two.toml", text)
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "recipes", "run", str(recipe), "-o", str(run_dir), "--nproc", "2"]

    # kill one rank mid-way through stage 1, after its first checkpoint
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = Run.__new__(Run)
    run.run_dir = run_dir
    deadline = time.monotonic() + 300
    while not run.stages().get("pre", {}).get("checkpoint"):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    [torchrun] = _children(process.pid)
    workers = _children(torchrun)
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGKILL)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 1, output
    assert "error: a process of the 2-process run failed" in output and "Traceback" not in output.split("error:")[-1]

    # again: resumes, both stages complete
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resuming from checkpoint-" in result.stdout
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert [stages[name]["status"] for name in ("pre", "chat")] == ["done", "done"]
    # 28 pre-training blocks in batches of 2 per rank: 7 steps with two ranks (14 with one)
    assert stages["pre"]["result"]["steps"] == 7 and stages["chat"]["result"]["steps"] == 2
    assert "x 2 processes" in result.stdout

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    for name in ("pre", "chat"):
        assert sorted(p.name for p in (run_dir / "stages" / name).iterdir()) == ["adapter", "merged", "stage.json"]
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(run_dir / "stages" / "pre" / "merged"),
                              str(run_dir / "stages" / "chat" / "adapter"))
