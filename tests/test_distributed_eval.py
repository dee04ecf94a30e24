"""A recipe in two processes on CPU (DDP over gloo, through `recipes run --nproc 2` and torchrun):
its evaluation counts each labelled token once, on a held-out set that two does not divide, so the
figures equal a one-process run's; and a terminal's Ctrl-C stops both processes at one common step,
each having saved its part of that step's checkpoint. One two-process run serves both tests: its
evaluation before training is recorded before the Ctrl-C arrives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from conftest import write

RECIPE = """
name = "evenly"
eval_matrix = false
[model]
path = "bundled:tiny-qwen2"
[defaults]
learning_rate = 1e-3
cutoff_len = 64
per_device_train_batch_size = 2
per_device_eval_batch_size = 2
gradient_accumulation_steps = 1
logging_steps = 1
max_steps = {steps}
save_steps = 100000
val_size = 5
[[stages]]
name = "pre"
kind = "pretrain"
[[stages.data]]
path = "corpus.jsonl"
format = "text"
"""


def recipe(folder, steps: int):
    write(folder / "corpus.jsonl", "".join(json.dumps({"text": f"Bees make honey {i}, and wax. " * 12}) + "\n"
                                           for i in range(16)))
    return write(folder / f"r{steps}.toml", RECIPE.format(steps=steps))


def manifest(run_dir) -> dict:
    try:
        return json.loads((run_dir / "manifest.json").read_text())["stages"]
    except (OSError, ValueError):
        return {}


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, tiny_model):
    """`recipes run --nproc 2` in a session of its own (as a terminal's foreground job), Ctrl-C sent to
    that session once the evaluation before training is recorded; (run folder, exit code, output)."""
    folder = tmp_path_factory.mktemp("two")
    run_dir = folder / "run"
    command = [sys.executable, "-m", "recipes", "run", str(recipe(folder, 100000)), "-o", str(run_dir), "--nproc", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 300
    while not manifest(run_dir).get("pre", {}).get("eval_before"):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0]
        time.sleep(0.05)
    time.sleep(1.0)  # into training
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    output, _ = process.communicate(timeout=300)
    return run_dir, process.returncode, output


def test_two_processes_evaluate_each_token_once(tmp_path, two_processes):
    from recipes.cli import main

    run_dir, _, output = two_processes
    one = tmp_path / "one"
    result = CliRunner().invoke(main, ["run", str(recipe(tmp_path, 1)), "-o", str(one)])
    assert result.exit_code == 0, result.output
    alone = json.loads((one / "stages" / "pre" / "stage.json").read_text())["eval_before"]["val"]
    both = manifest(run_dir)["pre"]["eval_before"]["pre/val"]
    assert both["tokens"] == alone["tokens"], (both, alone)
    assert abs(both["loss"] - alone["loss"]) <= 1e-6, (both, alone)
    assert "val: 5 held for evaluation" in result.output  # 5 blocks: two processes take 3 and 2


def test_ctrl_c_under_two_processes_stops_both_at_one_step_with_a_checkpoint(two_processes):
    run_dir, code, output = two_processes
    assert code == 130, output
    assert "every process stops after its current step" in output
    assert "interrupted: the 2-process run stopped after a common step" in output, output
    stage = manifest(run_dir)["pre"]
    assert stage["status"] == "interrupted", stage
    checkpoint = run_dir / stage["checkpoint"]
    step = int(checkpoint.name.rsplit("-", 1)[1])
    assert 1 <= step < 100000
    # each process saved its own part of the same step's checkpoint
    assert sorted(p.name for p in checkpoint.glob("rng_state_*.pth")) == ["rng_state_0.pth", "rng_state_1.pth"]
    assert [p.name for p in checkpoint.parent.glob("checkpoint-*")] == [checkpoint.name]
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["global_step"] == step


def test_under_torchrun_by_hand_ctrl_c_says_it_stops_at_once():
    """torchrun started by hand forwards the terminal's Ctrl-C to every process again at once: no common
    step can be agreed, so the handler says so (only `recipes run --nproc N` sets the stop file)."""
    from recipes.training.interrupts import STOP_FILE_ENV, cannot_stop_gracefully

    torchrun = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "none"}
    assert cannot_stop_gracefully(torchrun)
    assert cannot_stop_gracefully({**torchrun, "WORLD_SIZE": "1"})  # torchrun --nproc_per_node 1 forwards too
    assert not cannot_stop_gracefully({**torchrun, STOP_FILE_ENV: "/tmp/stop"})  # recipes run --nproc 2
    assert not cannot_stop_gracefully({"LOCAL_RANK": "0", "WORLD_SIZE": "1"})  # accelerate launch, one process
    assert not cannot_stop_gracefully({})  # one process: the two-stage Ctrl-C
