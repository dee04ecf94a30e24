"""What a new user meets first: a run whose output goes to a file, a bad line skipped as asked, a run
folder that belongs to one recipe and is found from anywhere, running up to a stage, and the
warnings and notes of validate and plan. Real CLI, real tiny model, real files."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import write
from recipes.cli import main
from test_resume import TWO_STAGES, small_recipe

CHAT = "".join(json.dumps({"messages": [{"role": "user", "content": f"Who makes honey {i}?"},
                                        {"role": "assistant", "content": "Bees do."}]}) + "\n" for i in range(4))


def two_stages(name: str) -> str:
    """The resume tests' two-stage recipe (two steps a stage, a line per step) under ``name``, its
    pre-training stage skipping bad records."""
    return TWO_STAGES.replace('name = "small"', f'name = "{name}"').replace(
        'kind = "pretrain"', 'kind = "pretrain"\non_bad_record = "skip"\nmax_bad_records = 2', 1)


def recipes_cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    """`recipes ARGS > out` in a fresh process: standard output is a file, not a terminal."""
    return subprocess.run([sys.executable, "-m", "recipes", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "80"})


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model):
    """A project folder with a two-stage recipe whose corpus has a broken line, run up to its first
    stage from the project folder, its output to a file: (folder, recipe, the run's result)."""
    folder = tmp_path_factory.mktemp("project")
    lines = small_recipe(folder).with_name("corpus.jsonl").read_text().splitlines(keepends=True)
    write(folder / "corpus.jsonl", "".join(lines[:6]) + "{not json\n" + "".join(lines[6:]))  # line 7 is broken
    write(folder / "chat.jsonl", CHAT)
    recipe = write(folder / "bees.toml", two_stages("bees"))
    return folder, recipe, recipes_cli("run", recipe.name, "--until", "pre", cwd=folder)


def test_a_run_into_a_file_prints_a_line_per_logging_step(project):
    folder, _, result = project
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    lines = [line for line in out.splitlines() if line.startswith("pre step ")]
    assert [line.split(":")[0] for line in lines] == ["pre step 1/2", "pre step 2/2"], out
    assert all(", lr " in line and "tok/s, ETA" in line and "loss " in line for line in lines), lines
    assert out.index("pre step 2/2") < out.index("done in")  # while the stage trains, not after it
    log = (folder / "runs" / "bees" / "run.log").read_text()
    assert "pre step 1/2: loss" in log and "pre step 2/2: loss" in log


def test_a_bad_line_with_skip_passes_validate_and_trains(project):
    folder, recipe, result = project
    assert result.returncode == 0
    assert "1 bad records skipped" in result.stdout
    checked = CliRunner().invoke(main, ["validate", str(recipe)])
    assert checked.exit_code == 0, checked.output
    assert "on_bad_record = \"skip\": 1 bad records skipped" in checked.output
    assert "corpus.jsonl:7" in checked.output  # where the skipped record is
    strict = write(folder / "strict" / "bees.toml", two_stages("bees").replace('on_bad_record = "skip"\n', ""))
    write(folder / "strict" / "corpus.jsonl", (folder / "corpus.jsonl").read_text())
    write(folder / "strict" / "chat.jsonl", CHAT)
    refused = CliRunner().invoke(main, ["validate", str(strict)])
    assert refused.exit_code == 2 and "corpus.jsonl:7" in refused.output  # the control: without skip, an error


def test_until_stops_after_the_stage_and_the_manifest_records_the_recipe(project):
    folder, recipe, _ = project
    manifest = json.loads((folder / "runs" / "bees" / "manifest.json").read_text())
    assert list(manifest["stages"]) == ["pre"] and manifest["stages"]["pre"]["status"] == "done"
    assert manifest["recipe"] == {"name": "bees", "path": str(recipe.resolve())}
    entry = manifest["stages"]["pre"]  # every checkpoint recorded the time so far (what a resume adds to)
    assert 0 < entry["elapsed"]["train"] <= entry["result"]["train_seconds"] <= entry["result"]["wall_seconds"]


def test_another_recipe_into_the_folder_is_refused_and_nothing_is_overwritten(project):
    folder, _, _ = project
    run_dir = folder / "runs" / "bees"
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    other = write(folder / "other.toml", two_stages("other"))
    result = CliRunner().invoke(main, ["run", str(other), "-o", str(run_dir)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "holds the run of recipe 'bees'" in errors[0] and "--force" in errors[0]
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_a_rerun_from_another_directory_finds_its_run_and_stage_runs_up_to_a_stage(project, tmp_path,
                                                                                    monkeypatch):
    folder, recipe, _ = project
    monkeypatch.chdir(tmp_path)  # elsewhere, no -o
    result = CliRunner().invoke(main, ["run", str(recipe), "--stage", "chat"])
    assert result.exit_code == 0, result.output
    assert "done earlier with the same inputs" in result.output  # pre: found and reused, not trained again
    assert "chat step 2/2" in result.output
    assert not (tmp_path / "runs").exists()
    manifest = json.loads((folder / "runs" / "bees" / "manifest.json").read_text())
    assert [manifest["stages"][s]["status"] for s in ("pre", "chat")] == ["done", "done"]


def test_a_resumed_stage_counts_the_time_of_every_process(tmp_path):
    from recipes.run.manifest import Manifest
    from recipes.run.progress import ManifestProgress

    manifest = Manifest.load(tmp_path)
    manifest.update("pre", status="running", checkpoint="stages/pre/checkpoints/checkpoint-4",
                    elapsed={"train": 100.0, "wall": 130.0})  # what the first process recorded at its checkpoint
    progress = ManifestProgress(manifest, "pre", tmp_path, resuming=True)
    assert progress.cumulative(25.0, 40.0) == (125.0, 170.0)
    progress.checkpoint_saved(tmp_path / "stages" / "pre" / "checkpoints" / "checkpoint-6", 6)
    assert manifest.stage("pre")["elapsed"]["train"] >= 100.0
    fresh = ManifestProgress(manifest, "pre", tmp_path, resuming=False)  # a stage trained afresh starts at zero
    assert fresh.cumulative(25.0, 40.0) == (25.0, 40.0)


def test_val_size_that_holds_out_nothing_is_found_by_validate(tmp_path):
    write(tmp_path / "chat.jsonl", CHAT)  # 4 records: a share of 0.1 holds out none
    recipe = write(tmp_path / "r.toml", '[model]\npath = "bundled:tiny-qwen2"\n[[stages]]\nname = "chat"\n'
                   'kind = "sft"\nval_size = 0.1\n[[stages.data]]\npath = "chat.jsonl"\nformat = "messages"\n')
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert result.exit_code == 2
    assert "r.toml:6:1: stages[0].val_size: val_size 0.1 holds out 0 of the 4 records" in result.output
    recipe.write_text(recipe.read_text().replace("val_size = 0.1", "val_size = 1"))
    assert CliRunner().invoke(main, ["validate", str(recipe)]).exit_code == 0  # one of four: fine


@pytest.mark.parametrize("path", ["models/qwen/Qwen2.5-7B", "Qwen2.5-7B-Instruct"])
def test_a_model_path_that_is_neither_folder_nor_hub_id_is_warned(tmp_path, path):
    write(tmp_path / "chat.jsonl", CHAT)
    recipe = write(tmp_path / "r.toml", f'[model]\npath = "{path}"\n[[stages]]\nname = "chat"\nkind = "sft"\n'
                   '[[stages.data]]\npath = "chat.jsonl"\nformat = "messages"\n')
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert "is neither a folder" in result.output and "nor a hub id (org/name)" in result.output, result.output
    assert "hf download" not in result.output
    recipe.write_text(recipe.read_text().replace(path, "Qwen/Qwen2.5-7B"))  # the control: a hub id is fine
    assert "is neither a folder" not in CliRunner().invoke(main, ["validate", str(recipe)]).output


def test_an_unknown_format_is_reported_with_the_schema_errors(tmp_path):
    write(tmp_path / "c.jsonl", '{"text": "a"}\n')
    recipe = write(tmp_path / "r.toml", '[model]\npath = "bundled:tiny-qwen2"\n[[stages]]\nname = "a"\n'
                   '[[stages.data]]\npath = "c.jsonl"\nformat = "textual"\n')  # kind missing, format unknown
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert result.exit_code == 2
    assert "stages[0].kind: required key 'kind' is missing" in result.output
    assert "stages[0].data[0].format: unknown data format 'textual'; did you mean \"text\"?" in result.output


def test_plan_says_when_max_steps_is_under_one_percent_of_an_epoch(tmp_path):
    write(tmp_path / "corpus.jsonl", "".join(json.dumps({"text": f"Document {i}. " * 60}) + "\n" for i in range(800)))
    body = ('[model]\npath = "bundled:tiny-qwen2"\n[[stages]]\nname = "pre"\nkind = "pretrain"\ncutoff_len = 64\n'
            'per_device_train_batch_size = 1\ngradient_accumulation_steps = 1\n{steps}[[stages.data]]\n'
            'path = "corpus.jsonl"\nformat = "text"\n')
    recipe = write(tmp_path / "r.toml", body.format(steps="max_steps = 5\n"))
    result = CliRunner().invoke(main, ["plan", str(recipe), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "note: max_steps 5 is 0." in result.output and "% of an epoch" in result.output
    recipe.write_text(body.format(steps="max_steps = 500\n"))
    assert "of an epoch" not in CliRunner().invoke(main, ["plan", str(recipe), "--device", "cpu"]).output


def test_validate_warns_of_a_demo_learning_rate_on_a_large_model(tmp_path):
    write(tmp_path / "chat.jsonl", CHAT)
    body = ('[model]\npath = "{model}"\n[[stages]]\nname = "chat"\nkind = "sft"\nlearning_rate = 1e-2\n'
            '[[stages.data]]\npath = "chat.jsonl"\nformat = "messages"\n')
    recipe = write(tmp_path / "r.toml", body.format(model="Qwen/Qwen2.5-7B"))  # its config ships with recipes
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert "learning rate 0.01 with a model of 7.6B parameters" in result.output, result.output
    recipe.write_text(body.format(model="bundled:tiny-qwen2"))  # the control: a tiny model takes it
    assert "learning rate 0.01" not in CliRunner().invoke(main, ["validate", str(recipe)]).output


def test_the_evaluation_matrix_is_one_line_per_set_when_not_on_a_terminal():
    from rich.console import Console

    from recipes.outputs.matrix import print_matrix

    sets = [f"stage{i}/val/a_long_source_name_{i}" for i in range(4)]
    matrix = {"sets": sets, "rows": [{"after": after, "results": {s: {"perplexity": ppl + i} for i, s in
                                                                 enumerate(sets)}}
                                     for after, ppl in (("model", 12.5), ("cpt", 9.25), ("sft", 9.5))]}
    out = io.StringIO()
    print_matrix(matrix, Console(file=out, width=80))
    lines = out.getvalue().splitlines()
    for name in sets:  # each set whole on one line, with every row's value
        line = next(line for line in lines if line.strip().startswith(name + ":"))
        assert "model 1" in line and "after cpt" in line and "after sft" in line, line
    wide = io.StringIO()
    print_matrix(matrix, Console(file=wide, width=300, force_terminal=True))
    assert "┃" in wide.getvalue() or "━" in wide.getvalue() or "─" in wide.getvalue()  # a table where it fits


def test_data_inspect_full_shows_the_trained_tokens_behind_a_long_system_prompt(tmp_path, tiny_model):
    system = "You can call these tools. " * 80  # about 2,000 characters before the first trained token
    write(tmp_path / "chat.jsonl", json.dumps({"messages": [{"role": "system", "content": system},
                                                            {"role": "user", "content": "Weather?"},
                                                            {"role": "assistant", "content": "SUNNY-ANSWER"}]}) + "\n")
    recipe = write(tmp_path / "r.toml", '[model]\npath = "bundled:tiny-qwen2"\n[[stages]]\nname = "chat"\n'
                   'kind = "sft"\npacking = false\n[[stages.data]]\npath = "chat.jsonl"\nformat = "messages"\n')
    clipped = CliRunner().invoke(main, ["data", "inspect", str(recipe), "-n", "1"])
    assert clipped.exit_code == 0, clipped.output
    assert "SUNNY-ANSWER" not in clipped.output and "--full shows them" in clipped.output
    whole = CliRunner().invoke(main, ["data", "inspect", str(recipe), "-n", "1", "--full"])
    assert whole.exit_code == 0 and "SUNNY-ANSWER" in whole.output


def test_cosine_with_min_lr_is_refused_by_validate_not_at_the_first_step(tmp_path):
    write(tmp_path / "chat.jsonl", CHAT)
    recipe = write(tmp_path / "r.toml", '[model]\npath = "bundled:tiny-qwen2"\n[[stages]]\nname = "chat"\nkind = "sft"\n'
                   'lr_scheduler_type = "cosine_with_min_lr"\n[[stages.data]]\npath = "chat.jsonl"\nformat = "messages"\n')
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert result.exit_code == 2
    assert "r.toml:6:1: stages[0].lr_scheduler_type: cosine_with_min_lr needs min_lr or min_lr_rate" in result.output
