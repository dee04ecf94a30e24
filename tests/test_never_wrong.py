"""Issue 20: the ways a run could still skip, corrupt or mislead, each driven through the real CLI,
the real decide() and real run folders on the tiny model."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import write
from recipes.cli import main
from test_resume import SMALL, TWO_STAGES, small_recipe

CHAT = "".join(json.dumps({"messages": [{"role": "user", "content": f"Who makes honey {i}?"},
                                        {"role": "assistant", "content": "Bees do."}]}) + "\n" for i in range(4))


def cli(*args, code=0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output + repr(result.exception)
    return result.output


def one_error(*args) -> str:
    """A command that must stop with one line, exit 2, no traceback (in a fresh process)."""
    result = subprocess.run([sys.executable, "-m", "recipes", *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory, tiny_model):
    """A finished two-stage run (pre -> chat): (recipe, run folder)."""
    folder = tmp_path_factory.mktemp("two")
    small_recipe(folder)
    write(folder / "chat.jsonl", CHAT)
    recipe = write(folder / "two.toml", TWO_STAGES)
    run_dir = folder / "run"
    cli("run", recipe, "-o", run_dir)
    return recipe, run_dir


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())["stages"]


def test_each_stage_reports_one_duration_and_a_peak_memory(two_stage):
    import re

    _, run_dir = two_stage
    said = re.findall(r"done in ([0-9.]+) s \(training ([0-9.]+) s\)", (run_dir / "run.log").read_text())
    assert len(said) >= 2, "run.log no longer says each stage's duration"
    report = {row["stage"]: row for row in json.loads((run_dir / "report" / "report.json").read_text())["stages"]}
    for name, (wall, train) in zip(("pre", "chat"), said[-2:]):  # the latest run's, as stage.json
        result = json.loads((run_dir / "stages" / name / "stage.json").read_text())
        assert (f"{result['wall_seconds']:.1f}", f"{result['train_seconds']:.1f}") == (wall, train)
        assert result["wall_seconds"] >= result["train_seconds"] > 0
        assert report[name]["wall_seconds"] == result["wall_seconds"]  # the report's "wall s"
        assert isinstance(result["peak_memory_bytes"], int) and result["peak_memory_bytes"] > 100 << 20


def test_a_base_trained_again_then_killed_before_its_child_makes_the_child_retrain(two_stage):
    from rich.console import Console

    from recipes.config.load import load_recipe
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry
    from recipes.run.runner import PlanRun

    recipe, run_dir = two_stage
    registry = get_registry()
    plan = make_plan(load_recipe(str(recipe), registry), registry, str(run_dir))
    # `--restart pre`: stage 1 trains and publishes again; the run is killed before stage 2 starts
    PlanRun(plan, Console(file=open(os.devnull, "w")), registry, ("pre",)).run_stage(plan.stages[0])
    assert _manifest(run_dir)["chat"]["status"] == "stale"
    output = cli("run", recipe, "-o", run_dir)
    assert output.count("done earlier with the same inputs") == 1  # pre only
    assert "training afresh: 'pre' before it was trained again" in output
    stages = _manifest(run_dir)
    assert stages["chat"]["status"] == "done"
    # the child's fingerprint covers what its base published, not only the base's inputs
    assert stages["chat"]["parts"]["base"]["fingerprint"] != stages["pre"]["fingerprint"]


def test_published_weights_are_0644_and_a_same_size_same_time_edit_is_found(two_stage):
    from recipes.run.publish import matches

    recipe, run_dir = two_stage
    weights = run_dir / "stages" / "chat" / "merged" / "model.safetensors"
    assert stat.S_IMODE(weights.stat().st_mode) & 0o044 == 0o044, oct(weights.stat().st_mode)
    record = _manifest(run_dir)["chat"]["outputs"]["merged"]
    assert matches(weights.parent, record["files"])
    before = weights.stat()
    with open(weights, "r+b") as handle:  # flip one byte, keep size and modification time
        handle.seek(before.st_size // 2)
        byte = handle.read(1)
        handle.seek(before.st_size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert not matches(weights.parent, record["files"])
    output = cli("run", recipe, "-o", run_dir)
    assert "training afresh: its published outputs are missing or changed on disk" in output


def test_a_second_run_on_a_folder_in_use_stops_and_a_dead_runs_lock_is_taken_over(two_stage):
    recipe, run_dir = two_stage
    lock = run_dir / ".lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "since": 0}))
    try:
        line = one_error("run", recipe, "-o", run_dir)
        assert f"in use by another `recipes run` (pid {os.getpid()} on {os.uname().nodename}, since" in line
    finally:
        lock.unlink()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "since": 0}))
    output = cli("run", recipe, "-o", run_dir)
    assert output.count("done earlier with the same inputs") == 2
    assert not lock.exists()  # released when the run ended


def test_a_finished_plan_is_decided_without_importing_torch(two_stage):
    recipe, run_dir = two_stage
    cli("run", recipe, "-o", run_dir)
    code = ("import sys; from recipes.cli import main\n"
            f"try:\n    main(['run', {str(recipe)!r}, '-o', {str(run_dir)!r}])\nexcept SystemExit as e:\n    print('EXIT', e.code)\n"
            "print('HEAVY', [m for m in ('torch', 'transformers') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "EXIT 0" in result.stdout and "HEAVY []" in result.stdout, result.stdout + result.stderr
    assert result.stdout.count("skipped") == 2


def test_a_manifest_path_outside_the_run_folder_is_refused(two_stage, tmp_path):
    recipe, run_dir = two_stage
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["stages"]["pre"]["outputs"]["merged"]["path"] = "../../../etc"
    (copy / "manifest.json").write_text(json.dumps(data))
    assert "outside the run folder" in one_error("run", recipe, "-o", copy)


def test_export_force_replaces_only_a_folder_an_export_wrote(two_stage, tmp_path):
    from recipes.errors import RecipeError
    from recipes.outputs.export import export_request
    from recipes.run.publish import MARKER

    _, run_dir = two_stage
    mine = tmp_path / "models"
    write(mine / "precious.txt", "keep me")
    with pytest.raises(RecipeError, match="--force replaces only a folder an earlier `recipes export` wrote"):
        export_request(run_dir, mine, force=True)
    assert (mine / "precious.txt").is_file()
    written = tmp_path / "exported"
    write(written / MARKER, "")
    write(written / "config.json", "{}")
    assert export_request(run_dir, written, force=True).to == written.resolve()


def test_publishing_deletes_only_side_folders_it_wrote(tmp_path):
    from recipes.errors import RecipeError
    from recipes.run.publish import MARKER, publishing

    target = tmp_path / "stage" / "merged"
    foreign = write(tmp_path / "stage" / ".merged.old" / "notes.txt", "mine")
    with pytest.raises(RecipeError, match="not written by recipes"):
        with publishing(target) as (side,):
            pass
    assert foreign.is_file()
    write(foreign.parent / MARKER, "")
    with publishing(target) as (side,):
        write(side / "config.json", "{}")
    assert (target / "config.json").is_file() and not foreign.parent.exists()


def test_the_rotation_window_resumes_from_the_newest_complete_checkpoint(tmp_path, tiny_model):
    from recipes.config.load import load_recipe
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry
    from recipes.run.runner import decide

    registry = get_registry()
    plan = make_plan(load_recipe(str(small_recipe(tmp_path)), registry), registry, str(tmp_path / "run"))
    stage = plan.stages[0]
    # save_total_limit = 1: checkpoint-4 saved, checkpoint-2 (the recorded one) rotated away, then killed
    write(stage.checkpoint_dir / "checkpoint-4" / "trainer_state.json", "{}")
    write(stage.checkpoint_dir / "checkpoint-6" / "adapter_model.safetensors", "")  # incomplete
    recorded = str((stage.checkpoint_dir / "checkpoint-2").relative_to(plan.run_dir))
    entry = {"status": "running", "fingerprint": "f", "checkpoint": recorded}
    assert decide(plan, stage, entry, "f", {}, forced=False, after=None) == (
        "resume", None, stage.checkpoint_dir / "checkpoint-4")


def test_max_steps_below_logging_steps_still_logs_the_last_step(tmp_path, tiny_model):
    recipe = small_recipe(tmp_path, steps=3)
    write(recipe, recipe.read_text().replace("logging_steps = 1", "logging_steps = 10"))
    cli("run", recipe, "-o", tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "loss" in row] == [1, 3]


def test_a_nan_in_evaluation_fails_the_stage_and_says_so_in_the_manifest(tmp_path, tiny_model):
    import torch
    from safetensors.torch import load_file, save_file

    model = tmp_path / "nan-model"
    shutil.copytree(tiny_model, model)
    weights = load_file(model / "model.safetensors")
    weights = {k: torch.full_like(v, float("nan")) if "norm" in k else v for k, v in weights.items()}
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    recipe = small_recipe(tmp_path, steps=2)
    write(recipe, recipe.read_text().replace('"bundled:tiny-qwen2"', json.dumps(str(model)))
          .replace("kind = \"pretrain\"", "kind = \"pretrain\"\nval_size = 2"))
    result = CliRunner().invoke(main, ["run", str(recipe), "-o", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert "the loss is nan" in result.output and "Traceback" not in result.output
    entry = _manifest(tmp_path / "run")["pre"]  # evaluated before training: failed, not left running
    assert entry["status"] == "failed" and "nan" in entry["error"]


def test_bad_data_in_the_last_stage_is_refused_before_the_first_trains(tmp_path, tiny_model):
    small_recipe(tmp_path)
    write(tmp_path / "chat.jsonl", CHAT + '{"messages": [{"role": "user"\n')
    recipe = write(tmp_path / "two.toml", TWO_STAGES)
    line = one_error("run", recipe, "-o", tmp_path / "run")
    assert "chat.jsonl:5: not valid JSON" in line, line
    assert not (tmp_path / "run" / "stages").exists()
    assert "chat.jsonl:5" in one_error("validate", recipe)


def test_empty_and_blank_data_files_are_one_line_naming_the_file_in_validate_and_run(tmp_path):
    small_recipe(tmp_path)
    recipe = write(tmp_path / "two.toml", TWO_STAGES)
    for name, text in (("corpus.jsonl", ""), ("corpus.jsonl", "\n\n  \n"), ("chat.jsonl", ""), ("chat.jsonl", "\n \n")):
        small_recipe(tmp_path)
        write(tmp_path / "chat.jsonl", CHAT)
        write(tmp_path / name, text)
        for command in (("validate", recipe), ("run", recipe, "-o", tmp_path / "run")):
            line = one_error(*command)
            assert f"{tmp_path / name}: no records in this file" in line, line
            assert line.startswith(f"error: {recipe}:"), line  # and the recipe line that names the file
        assert not (tmp_path / "run" / "stages").exists()  # refused before any stage trains


def test_a_hub_id_missing_from_the_cache_validates_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    recipe = small_recipe(tmp_path)
    write(recipe, recipe.read_text().replace('"bundled:tiny-qwen2"', '"Qwen/Qwen2.5-7B"'))
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert result.exit_code == 0, result.output
    # (the recipe's 1e-2, a tiny model's rate, is also warned of on a 7B model)
    [warning] = [line for line in result.output.splitlines() if line.startswith("warning:") and "model.path" in line]
    assert "model.path: 'Qwen/Qwen2.5-7B' is not in the local HF cache" in warning
    assert "`recipes run` will stop at the start" in warning and "hf download Qwen/Qwen2.5-7B" in warning
    assert "ok " in result.output


def test_a_model_folder_without_a_tokenizer_is_refused(tmp_path, tiny_model):
    model = tmp_path / "no-tokenizer"
    model.mkdir()
    shutil.copy(Path(tiny_model) / "config.json", model)
    recipe = small_recipe(tmp_path)
    write(recipe, recipe.read_text().replace('"bundled:tiny-qwen2"', json.dumps(str(model))))
    assert "has no tokenizer files" in one_error("validate", recipe)
    assert "has no tokenizer files" in one_error("run", recipe, "-o", tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_recipe_mistakes_are_one_line(tmp_path):
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b'name = "\xff\xfe"\n')
    assert "not UTF-8 text" in one_error("validate", binary)
    twice = write(tmp_path / "twice.toml", 'name = "a"\nname = "b"\n')
    assert "'name' is set twice" in one_error("validate", twice)
    lax = small_recipe(tmp_path)
    write(lax, lax.read_text().replace("max_steps = 8", 'max_steps = "8"'))
    assert "max_steps: Input should be a valid integer (got '8')" in one_error("validate", lax)
    write(lax, lax.read_text().replace('max_steps = "8"', 'max_steps = 8\ngradient_checkpointing = "no"'))
    assert "gradient_checkpointing: Input should be a valid boolean" in one_error("validate", lax)


def test_a_format_of_a_plugin_package_not_installed_gives_an_install_hint(tmp_path):
    recipe = small_recipe(tmp_path)
    write(recipe, recipe.read_text().replace('format = "text"', 'format = "dolly"'))
    result = subprocess.run([sys.executable, "-m", "recipes", "validate", str(recipe)], capture_output=True,
                            text=True, env={**os.environ, "RECIPES_PLUGINS": "qwen"})
    assert result.returncode == 2 and "pip install -e plugins/recipes-dolly-format" in result.stderr, result.stderr


def test_path_mistakes_are_one_line(tmp_path):
    assert "does not exist" in one_error("cp", "demo", tmp_path / "sub" / "dir" / "x.toml")
    assert "does not exist" in one_error("schema", "-o", tmp_path / "q" / "r" / "s.json")
    assert "cannot create it" in one_error("run", "demo", "-o", "/proc/x")


def test_nproc_2_works_from_a_folder_holding_recipes(tmp_path, tiny_model):
    small_recipe(tmp_path / "recipes", steps=1)
    result = subprocess.run([sys.executable, "-m", "recipes", "run", "recipes/small.toml", "-o", "run", "--nproc",
                             "2"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "x 2 processes" in result.stdout
    assert _manifest(tmp_path / "run")["pre"]["status"] == "done"


def test_a_big_files_digest_is_kept_across_processes_and_an_edit_is_still_seen(tmp_path, monkeypatch):
    """Re-runs beside a 15 GB model or over a 10 GB corpus do not read them again, yet an edit that
    keeps the size and puts the modification time back is found (its inode change time moved)."""
    import hashlib
    import os

    from recipes import hashing

    monkeypatch.setenv("RECIPES_CACHE", str(tmp_path / "cache"))
    big = tmp_path / "weights.bin"
    big.write_bytes(b"a" * hashing.REMEMBER_BYTES)
    first = hashing.file_sha256(big)
    assert first == hashlib.sha256(big.read_bytes()).hexdigest()
    [memo] = [p for p in (tmp_path / "cache" / "digests").rglob("*") if p.is_file()]
    assert memo.read_text() == first
    hashing._sha256.cache_clear()  # as a new process
    memo.write_text("f" * 64)  # the remembered digest is what a new process uses, unread
    assert hashing.file_sha256(big) == "f" * 64
    stat = big.stat()
    with open(big, "r+b") as handle:  # same size, modification time put back
        handle.write(b"b")
    os.utime(big, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    hashing._sha256.cache_clear()
    assert big.stat().st_mtime_ns == stat.st_mtime_ns and big.stat().st_size == stat.st_size
    assert hashing.file_sha256(big) == hashlib.sha256(big.read_bytes()).hexdigest() != first
