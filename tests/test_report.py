"""The run report on the real demo run folder; re-logged steps after a resume; TensorBoard files."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from recipes.cli import main
from recipes.outputs.report import cell, read_metrics, read_run, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_of_the_demo_run(demo_run, tmp_path):
    run_dir = shutil.copytree(demo_run[0], tmp_path / "run")  # the report is rewritten: never the shared run's
    result = CliRunner().invoke(main, ["report", str(run_dir)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for heading in ("stage", "tokens/s", "final", "loss", "ppl", "before", "after", "peak", "memory"):
        assert heading in result.output  # headings wrap by word
    sft = next(line for line in result.output.splitlines() if line.lstrip().startswith("sft "))
    assert sft.split()[7] != "-" and sft.split()[8] != "-"  # eval perplexity before and after (val_size)
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert [row["stage"] for row in report["stages"]] == ["domain", "sft"]
    for row in report["stages"]:
        stage = json.loads((run_dir / "stages" / row["stage"] / "stage.json").read_text())
        assert (row["status"], row["steps"], row["tokens"]) == ("done", stage["steps"], stage["tokens_seen"])
        assert row["final_loss"] == stage["final_loss"]
        assert row["tokens_per_second"] == stage["tokens_seen"] / stage["train_seconds"]
    assert (run_dir / "report" / "loss.png").read_bytes()[:8] == PNG
    markdown = (run_dir / "report" / "report.md").read_text()
    assert "![loss](loss.png)" in markdown and "| domain | done |" in markdown


def test_fields_a_run_lacks_show_as_a_dash(demo_run):
    run_dir, _ = demo_run
    report = read_run(run_dir)
    optional = ("eval_perplexity_before", "eval_perplexity_after", "peak_memory_bytes")
    for row in report["stages"]:
        stage = json.loads((run_dir / "stages" / row["stage"] / "stage.json").read_text())
        for key in optional:
            assert (cell(key, row[key]) == "-") == (stage.get(key) is None and
                                                     stage.get(key.replace("perplexity", "loss")) is None)
    assert cell("peak_memory_bytes", 3 * 2**30) == "3.00 GiB" and cell("eval_perplexity_after", None) == "-"


def test_a_resumed_run_keeps_the_latest_rows(demo_run, tmp_path):
    run_dir, _ = demo_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("merged", "adapter", "report"))
    before = read_metrics(copy / "metrics.jsonl")["domain"]["train"]
    last = before[-1]["step"]
    resumed_from = before[len(before) // 2]["step"]  # the crash came after this step; rows after it re-logged
    with open(copy / "metrics.jsonl", "a") as out:
        out.write(json.dumps({"event": "run_start", "time": 0}) + "\n")
        for step in range(resumed_from + 1, last + 1):
            out.write(json.dumps({"stage": "domain", "step": step, "loss": 100.0 + step, "tokens": 1, "time": 1}) + "\n")
        out.write(json.dumps({"stage": "domain", "step": last, "eval_loss": 11.0, "time": 2}) + "\n")
        out.write('{"stage": "domain", "step": 3, "lo')  # a line cut short by a crash
    after = read_metrics(copy / "metrics.jsonl")["domain"]["train"]
    steps = [row["step"] for row in after]
    assert steps == sorted(set(steps)), "one row per step"
    assert [r["loss"] for r in after if r["step"] <= resumed_from] == [r["loss"] for r in before if r["step"] <= resumed_from]
    assert all(r["loss"] == 100.0 + r["step"] for r in after if r["step"] > resumed_from)
    assert read_run(copy)["curves"]["domain"]["train"][-1] == [last, 100.0 + last]
    # the evaluations before (step 0) and after the stage, the latter replaced by the resumed run's
    assert read_run(copy)["curves"]["domain"]["eval"][-1] == [last, 11.0]
    folder = write_report(copy)
    assert (folder / "eval.png").read_bytes()[:8] == PNG


def test_report_of_a_folder_that_is_no_run_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert f"error: {tmp_path}: not a run folder (no manifest.json)" in result.output


def test_tensorboard_is_a_default_callback_and_logs_each_stages_training_loss(demo_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from recipes.plugins.registry import get_registry

    assert get_registry().callbacks["tensorboard"].default
    run_dir, _ = demo_run
    metrics = read_metrics(run_dir / "metrics.jsonl")
    for stage in ("domain", "sft"):
        events = EventAccumulator(str(run_dir / "tensorboard" / stage))
        events.Reload()
        logged = [(row["step"], row["loss"]) for row in metrics[stage]["train"]]
        assert len(logged) >= 2
        scalars = [(event.step, event.value) for event in events.Scalars("train/loss")]
        assert [step for step, _ in scalars] == [step for step, _ in logged]
        assert [value for _, value in scalars] == pytest.approx([loss for _, loss in logged], rel=1e-6)


def test_the_eval_curve_is_the_stages_own_set_never_another_stages():
    from recipes.outputs.report import _headline_eval

    matrix = {"eval_domain/val_loss": 3.0, "eval_domain/general_loss": 4.0}
    row = {"stage": "sft", "step": 4}
    assert "eval_loss" not in _headline_eval({**row, **matrix})  # only other stages' sets: no curve
    assert _headline_eval({**row, **matrix, "eval_extra_loss": 2.0})["eval_loss"] == 2.0
    assert _headline_eval({**row, **matrix, "eval_extra_loss": 2.0, "eval_val_loss": 1.5})["eval_loss"] == 1.5
    assert _headline_eval({**row, "eval_sft/val_loss": 1.25, **matrix})["eval_loss"] == 1.25  # names kept whole
    assert _headline_eval({**row, "eval_loss": 0.5, "eval_val_loss": 1.5})["eval_loss"] == 0.5
