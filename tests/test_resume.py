"""Crash-safe, resumable runs: SIGKILL anywhere, Ctrl-C, non-finite losses, a full disk.

The kill test drives the real CLI in a subprocess over the bundled demo recipe and compares the
final adapters with the uninterrupted run of the ``demo_run`` fixture.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import write
from recipes.errors import TrainingError
from recipes.plugins.hookspecs import CallbackPlugin, hookimpl
from recipes.config.load import load_recipe
from recipes.planning.plan import make_plan
from recipes.plugins.registry import get_registry
from recipes.run.publish import matches
from recipes.run.runner import run_plan


class Run:
    """`recipes run` in a subprocess, its output read as it comes, its manifest polled. The deadlines only
    turn a hang into a failure: a loaded machine runs the demo many times slower than an idle one."""

    def __init__(self, run_dir: Path, recipe: str = "demo", env: dict | None = None):
        self.run_dir, self.lines = run_dir, []
        self.runs_before = self._metrics().count("run_start")
        self.process = subprocess.Popen([sys.executable, "-m", "recipes", "run", recipe, "-o", str(run_dir)],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env={**os.environ, **(env or {})})
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self.reader.start()

    def stages(self) -> dict:
        try:
            return json.loads((self.run_dir / "manifest.json").read_text())["stages"]
        except (OSError, ValueError):
            return {}

    def _metrics(self) -> str:
        path = self.run_dir / "metrics.jsonl"
        return path.read_text() if path.exists() else ""

    def steps_logged(self) -> int:
        """The last step with a logged loss in this run (metrics.jsonl, after this run's start)."""
        rows = [json.loads(line) for line in self._metrics().splitlines()]
        starts = [i for i, row in enumerate(rows) if row.get("event") == "run_start"]
        if len(starts) <= self.runs_before:
            return 0
        return max((row["step"] for row in rows[starts[self.runs_before]:] if "loss" in row), default=0)

    def signal_when(self, condition, sig=signal.SIGKILL, timeout: float = 1200, poll: float = 0.005) -> dict:
        """Send ``sig`` as soon as ``condition(stages, output)`` holds; return the stages seen then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stages = self.stages()
            if condition(stages, "".join(self.lines)):
                self.process.send_signal(sig)
                return stages
            assert self.process.poll() is None, "".join(self.lines)
            time.sleep(poll)
        raise AssertionError("condition never held:\n" + "".join(self.lines))

    def finish(self, timeout: float = 1200) -> tuple[int, str]:
        code = self.process.wait(timeout)
        self.reader.join(10)
        return code, "".join(self.lines)


def status(stages, name):
    return stages.get(name, {}).get("status")


def checkpoint(stages, name):
    return stages.get(name, {}).get("checkpoint")


def half_built_stores(cache: Path) -> list[Path]:
    """The token stores of ``cache`` being built: their lock taken, their store.json not yet written."""
    return [lock.parent / lock.stem for lock in (cache / "store").glob("*.lock")
            if not (lock.parent / lock.stem / "store.json").is_file()]


def kill_while_preparing(run_dir: Path, tmp_path: Path, tiny_model: Path, attempts: int = 3) -> dict:
    """SIGKILL the demo while it tokenizes into an empty token store (a cache of its own that holds only
    the tiny model); the window is short, so a kill that landed after the stores were ready is tried
    again on a fresh cache. The environment of the runs after it (the same cache)."""
    for attempt in range(attempts):
        cache = tmp_path / f"cache{attempt}"
        cache.mkdir()
        (cache / tiny_model.name).symlink_to(tiny_model)
        env = {"RECIPES_CACHE": str(cache)}
        shutil.rmtree(run_dir, ignore_errors=True)
        run = Run(run_dir, env=env)
        # stage 1's two stores ready: too late (stage 2's store comes after its training)
        run.signal_when(lambda st, out: half_built_stores(cache) or out.count("prepared into the store") >= 2,
                        poll=0.001)
        assert run.finish()[0] == -signal.SIGKILL
        if half_built_stores(cache):  # the kill landed mid-preparation
            return env
    raise AssertionError(f"no kill landed while a store was being prepared in {attempts} attempts")


def test_sigkill_anywhere_then_rerun_completes_without_retraining(demo_run, tmp_path, tiny_model):
    run_dir = tmp_path / "run"
    reference = demo_run[0]

    # 1. during data preparation: a store half-written
    env = kill_while_preparing(run_dir, tmp_path, tiny_model)
    # 2. mid-way through stage 1, after its first checkpoint (every run from here reads that same cache):
    #    the half-written store is prepared again
    run = Run(run_dir, env=env)
    seen = run.signal_when(lambda st, out: checkpoint(st, "domain"))
    assert run.finish()[0] == -signal.SIGKILL
    assert "prepared into the store" in "".join(run.lines)
    assert "training afresh: it stopped before its first checkpoint" in "".join(run.lines)
    assert seen["domain"]["checkpoint"].endswith("checkpoint-10")
    # 3. while publishing stage 1 (trained, not yet done)
    run = Run(run_dir, env=env)
    seen = run.signal_when(lambda st, out: status(st, "domain") == "trained")
    assert run.finish()[0] == -signal.SIGKILL
    assert "resuming from checkpoint-10" in "".join(run.lines)
    assert seen["domain"]["status"] == "trained"
    merged = run_dir / "stages" / "domain" / "merged"  # killed while publishing: absent, or whole
    assert not merged.exists() or (merged / "config.json").is_file() and any(merged.glob("*.safetensors"))
    # 4. between the stages
    run = Run(run_dir, env=env)
    run.signal_when(lambda st, out: status(st, "domain") == "done")
    run.finish()
    assert "resuming from checkpoint-15" in "".join(run.lines)  # the final checkpoint: no step trained again
    finished = run.stages()["domain"]["finished"]
    # 5. mid-way through stage 2
    run = Run(run_dir, env=env)
    run.signal_when(lambda st, out: checkpoint(st, "sft"))
    assert run.finish()[0] == -signal.SIGKILL
    # 6. to the end
    run = Run(run_dir, env=env)
    code, output = run.finish()
    assert code == 0, output
    assert "done earlier with the same inputs" in output and "resuming from checkpoint-" in output
    stages = run.stages()
    assert stages["domain"]["finished"] == finished  # stage 1 was not trained nor published again
    assert all(status(stages, name) == "done" for name in ("domain", "sft"))

    # the manifest matches the files on disk, checksum by checksum
    for entry in stages.values():
        for output_entry in entry["outputs"].values():
            assert matches(run_dir / output_entry["path"], output_entry["files"], full=True)
    assert not list(run_dir.rglob("*.partial")) and not (run_dir / "stages" / "domain" / "checkpoints").exists()

    # the resumed adapters equal those of the uninterrupted run
    for name in ("domain", "sft"):
        ours = load_file(run_dir / "stages" / name / "adapter" / "adapter_model.safetensors")
        theirs = load_file(reference / "stages" / name / "adapter" / "adapter_model.safetensors")
        assert ours.keys() == theirs.keys()
        assert max((ours[k] - theirs[k]).abs().max().item() for k in ours) <= 1e-5

    # every published model loads
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    for name in ("domain", "sft"):
        AutoModelForCausalLM.from_pretrained(run_dir / "stages" / name / "merged")
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(run_dir / "stages" / "domain" / "merged"),
                              str(run_dir / "stages" / "sft" / "adapter"))


SMALL = """
name = "small"
[model]
path = "bundled:tiny-qwen2"
[defaults]
learning_rate = 1e-2
cutoff_len = 64
per_device_train_batch_size = 2
gradient_accumulation_steps = 1
logging_steps = 1
max_steps = {steps}
save_steps = {save_steps}
skip_nonfinite_batches = {skip}
[[stages]]
name = "pre"
kind = "pretrain"
[[stages.data]]
path = "corpus.jsonl"
format = "text"
"""


def small_recipe(folder: Path, steps=8, save_steps=100, skip=0) -> Path:
    write(folder / "corpus.jsonl", "".join(json.dumps({"text": f"Bees make honey {i}. " * 20}) + "\n"
                                           for i in range(12)))
    return write(folder / "small.toml", SMALL.format(steps=steps, save_steps=save_steps, skip=skip))


def test_ctrl_c_stops_at_a_step_with_a_checkpoint_and_the_run_resumes(tmp_path, tiny_model):
    recipe, run_dir = small_recipe(tmp_path), tmp_path / "run"
    logged = lambda st, out: run.steps_logged() >= 2

    # twice: the second Ctrl-C, sent the moment the first is acknowledged (mid-step or mid-save), stops
    # at once: the at-once message, never the step-boundary stop that the first alone would give
    run = Run(run_dir, str(recipe))
    run.signal_when(logged, sig=signal.SIGINT)
    run.signal_when(lambda st, out: "Ctrl-C: stopping after this step" in out, sig=signal.SIGINT)
    code, output = run.finish()
    assert code == 130 and "Traceback" not in output, output
    assert "interrupted; run the same command again" in output and "stopped at step" not in output, output

    # once: stops after the step, with a checkpoint, and says how to resume
    run = Run(run_dir, str(recipe))
    run.signal_when(logged, sig=signal.SIGINT)
    code, output = run.finish()
    assert code == 130 and "Traceback" not in output, output
    assert "interrupted: stage 'pre' stopped at step" in output and "Run the same command again" in output
    saved = run.stages()["pre"]["checkpoint"]
    step = int(saved.rsplit("-", 1)[1])
    assert 1 <= step < 8 and (run_dir / saved / "trainer_state.json").is_file()

    run = Run(run_dir, str(recipe))
    code, output = run.finish()
    assert code == 0, output
    assert f"resuming from checkpoint-{step}" in output
    assert run.stages()["pre"]["result"]["steps"] == 8


def poison_plugin(when_step: int, how: str):
    """A callback plugin that breaks training on purpose (fault injection through the plugin hook)."""
    from transformers import TrainerCallback

    class Poison(TrainerCallback):
        hook = None

        def on_step_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step == when_step - 1 and how == "batch":  # one batch's activations become NaN
                self.hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: o * float("nan"))

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if self.hook is not None:
                self.hook.remove()
                self.hook = None
            if state.global_step == when_step - 1 and how == "weights":  # the weights themselves
                with torch.no_grad():
                    next(p for n, p in model.named_parameters() if "lora_B" in n).fill_(float("nan"))

    class PoisonPlugin:
        @hookimpl
        def register_callbacks(self):
            return [CallbackPlugin("poison", lambda context: Poison(), default=True)]

    return PoisonPlugin()


def _run_small(tmp_path, registry, **kwargs):
    from rich.console import Console

    loaded = load_recipe(str(small_recipe(tmp_path, **kwargs)), registry)
    plan = make_plan(loaded, registry, str(tmp_path / "run"))
    return plan, run_plan(plan, Console(file=open(tmp_path / "out.txt", "w")), registry)


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, tiny_model):
    registry = get_registry(extra_plugins=(poison_plugin(5, "weights"),))
    with pytest.raises(TrainingError) as info:
        _run_small(tmp_path, registry, steps=8, save_steps=2)
    message = str(info.value)
    assert "stage 'pre': the loss is nan at step 5; the last good checkpoint is stages/pre/checkpoints/checkpoint-4" in message
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["pre"]
    assert manifest["status"] == "failed" and manifest["checkpoint"].endswith("checkpoint-4")
    state = json.loads((tmp_path / "run" / manifest["checkpoint"] / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert not (tmp_path / "run" / "stages" / "pre" / "adapter").exists()


def test_the_last_two_checkpoints_are_kept_by_default(tmp_path, tiny_model):
    """save_total_limit (default 2): with a checkpoint every step, the stage's checkpoint folder holds the
    last two while it trains (seen by a callback plugin when step 8 begins)."""
    from transformers import TrainerCallback

    seen = {}

    class Watch(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            seen[state.global_step] = sorted(p.name for p in Path(args.output_dir).glob("checkpoint-*"))

    class WatchPlugin:
        @hookimpl
        def register_callbacks(self):
            return [CallbackPlugin("watch", lambda context: Watch(), default=True)]

    _run_small(tmp_path, get_registry(extra_plugins=(WatchPlugin(),)), steps=8, save_steps=1)
    assert seen[7] == ["checkpoint-6", "checkpoint-7"], seen


def test_non_finite_batches_can_be_skipped_up_to_a_limit(tmp_path, tiny_model):
    registry = get_registry(extra_plugins=(poison_plugin(3, "batch"),))
    plan, [result] = _run_small(tmp_path, registry, steps=6, skip=1)
    assert result.steps == 6
    assert "step 3: non-finite loss (nan); batch skipped (1 of at most 1)" in (tmp_path / "run" / "run.log").read_text()
    adapter = load_file(plan.stages[0].adapter_dir / "adapter_model.safetensors")
    assert all(torch.isfinite(t).all() for t in adapter.values())


def test_out_of_disk_space_while_publishing_publishes_nothing_and_keeps_the_checkpoint(tmp_path, tiny_model, monkeypatch):
    import transformers.modeling_utils as modeling_utils

    real_save = modeling_utils.safe_save_file

    def disk_full(tensors, filename, *args, **kwargs):  # the merged model's weights hit a full disk
        if ".merged.partial" in str(filename):
            Path(filename).write_bytes(b"\0" * 1024)  # part of the file was written
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(modeling_utils, "safe_save_file", disk_full)
    registry = get_registry()
    with pytest.raises(TrainingError) as info:
        _run_small(tmp_path, registry, steps=4)
    assert "out of disk space while writing the adapter and merged" in str(info.value)
    assert "nothing was published; the final checkpoint stages/pre/checkpoints/checkpoint-4 is intact" in str(info.value)
    stage_dir = tmp_path / "run" / "stages" / "pre"
    assert not (stage_dir / "adapter").exists() and not (stage_dir / "merged").exists()
    assert not list(stage_dir.glob(".*partial"))
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["pre"]["status"] == "trained"

    monkeypatch.setattr(modeling_utils, "safe_save_file", real_save)  # space freed: run again
    (tmp_path / "out.txt").unlink()
    plan, [result] = _run_small(tmp_path, registry, steps=4)
    assert "resuming from checkpoint-4" in (tmp_path / "out.txt").read_text()
    assert result.steps == 4 and (stage_dir / "merged" / "config.json").is_file()


TWO_STAGES = SMALL.format(steps=2, save_steps=100, skip=0) + """
[[stages]]
name = "chat"
kind = "sft"
[[stages.data]]
path = "chat.jsonl"
format = "messages"
"""


def test_changed_inputs_rerun_that_stage_and_the_ones_after_it_and_say_why(tmp_path, tiny_model):
    from click.testing import CliRunner

    from recipes.cli import main

    small_recipe(tmp_path)
    write(tmp_path / "chat.jsonl", json.dumps({"messages": [{"role": "user", "content": "Who makes honey?"},
                                                            {"role": "assistant", "content": "Bees do."}]}) + "\n")
    recipe = write(tmp_path / "two.toml", TWO_STAGES)
    run_dir = str(tmp_path / "run")

    def run(*extra):
        result = CliRunner().invoke(main, ["run", str(recipe), "-o", run_dir, *extra])
        assert result.exit_code == 0, result.output
        return result.output

    run()
    output = run()
    assert output.count("done earlier with the same inputs") == 2

    write(recipe, TWO_STAGES.replace('kind = "sft"', 'kind = "sft"\nlearning_rate = 2e-2'))
    output = run()
    assert output.count("done earlier with the same inputs") == 1  # stage 1 kept
    assert "training afresh: settings changed: learning_rate 0.01 -> 0.02" in output

    write(tmp_path / "corpus.jsonl", json.dumps({"text": "Wasps make no honey. " * 30}) + "\n")
    output = run()
    assert "training afresh: data changed: corpus.jsonl" in output
    assert "training afresh: 'pre' before it was trained again" in output

    output = run("--restart", "chat")
    assert output.count("done earlier with the same inputs") == 1 and "--restart names it" in output

    result = CliRunner().invoke(main, ["run", str(recipe), "-o", run_dir, "--restart", "chatt"])
    assert result.exit_code == 2 and 'did you mean "chat"?' in result.output
