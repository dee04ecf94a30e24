"""What a run writes beyond its models, on a copy of the shared demo run and on one small run: the
evaluation matrix (stage.json, run log, report table and PNG, `report --json`), each stage's data mix in
the report, the per-source training loss (metrics.jsonl, TensorBoard, the stage log), the learning
rate, gradient norm and tokens of each logged step; and, on the small run, `eval_matrix = false`,
`val_size` as a count, evaluation every `eval_steps`, the evaluation batch size, and the standard
loss saying it has no per-source loss."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from click.testing import CliRunner

from conftest import write
from recipes.cli import main
from recipes.outputs.report import read_metrics

PNG = b"\x89PNG\r\n\x1a\n"
SETS = ["domain/val/domain_corpus", "domain/val/general_corpus", "sft/val"]


def stage_json(run_dir, name) -> dict:
    return json.loads((run_dir / "stages" / name / "stage.json").read_text())


def test_the_evaluation_matrix_is_in_stage_json_the_log_and_the_report(demo_run, tmp_path):
    run_dir = shutil.copytree(demo_run[0], tmp_path / "run")  # `recipes report` rewrites report/
    domain, sft = (stage_json(run_dir, name)["eval_matrix"] for name in ("domain", "sft"))
    # every set of every stage, on the starting model (once, with the first stage) and after each stage
    assert sorted(domain["start"]) == sorted(domain["after"]) == sorted(sft["after"]) == sorted(SETS)
    assert sft["start"] is None
    for row in (domain["start"], domain["after"], sft["after"]):
        for value in row.values():
            assert value["tokens"] > 0 and value["perplexity"] == pytest.approx(math.exp(value["loss"]), rel=1e-6)
    assert sft["after"]["sft/val"]["loss"] < domain["start"]["sft/val"]["loss"]  # trained: the SFT set fell

    log = (run_dir / "run.log").read_text().splitlines()
    for said, row in (("eval on the starting model:", domain["start"]), ("eval after:", domain["after"]),
                      ("eval after:", sft["after"])):  # a line with every set's loss of the row
        lines = [line for line in log if said in line]
        assert any(all(f"{name} loss {value['loss']:.4f}" in line for name, value in row.items()) for line in lines), (
            said, row, lines)

    result = CliRunner().invoke(main, ["report", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    matrix = report["eval_matrix"]
    assert sorted(matrix["sets"]) == sorted(SETS) and [row["after"] for row in matrix["rows"]] == ["model", "domain", "sft"]
    assert [row["results"] for row in matrix["rows"]] == [domain["start"], domain["after"], sft["after"]]
    assert (run_dir / "report" / "eval_matrix.png").read_bytes()[:8] == PNG
    markdown = (run_dir / "report" / "report.md").read_text()
    table = markdown[markdown.index("## Evaluation matrix"):markdown.index("## Data mix")]  # the section alone
    assert "![evaluation matrix](eval_matrix.png)" in table
    for label, row in (("model", domain["start"]), ("after domain", domain["after"]), ("after sft", sft["after"])):
        [line] = [line for line in table.splitlines() if line.startswith(f"| {label} |") and "/" not in line]  # not the heading
        for name in matrix["sets"]:
            assert f"{row[name]['perplexity']:,.2f}" in line, (label, name, line)
    # the domain stage's data mix: both sources with their weights
    mix = markdown[markdown.index("## Data mix"):markdown.index("## Samples")]
    assert "- domain: " in mix and "source domain_corpus:" in mix and "source general_corpus:" in mix
    assert "weight 0.8" in mix and "weight 0.2" in mix and "- sft:" not in mix  # one source: no mix


def test_each_logged_step_carries_lr_grad_norm_tokens_and_the_loss_per_source(demo_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = demo_run
    metrics = read_metrics(run_dir / "metrics.jsonl")
    for stage in ("domain", "sft"):
        rows = metrics[stage]["train"]
        assert len(rows) >= 2
        assert all(row["learning_rate"] >= 0 and row["grad_norm"] > 0 for row in rows), rows
        tokens = [row["tokens"] for row in rows]
        assert tokens == sorted(tokens) and tokens[0] > 0 and len(set(tokens)) == len(tokens)
    # two sources in the domain stage: a loss per source at each logged step, in every place it goes
    sources = ("domain_corpus", "general_corpus")
    domain = metrics["domain"]["train"]
    assert all(f"source_loss/{name}" in row for row in domain for name in sources[:1])
    assert any(f"source_loss/{sources[1]}" in row for row in domain)
    assert not any(key.startswith("source_loss/") for row in metrics["sft"]["train"] for key in row)  # one source
    events = EventAccumulator(str(run_dir / "tensorboard" / "domain"))
    events.Reload()
    for name in sources:
        logged = [(row["step"], row[f"source_loss/{name}"]) for row in domain if f"source_loss/{name}" in row]
        scalars = [(event.step, event.value) for event in events.Scalars(f"train/source_loss/{name}")]
        assert [step for step, _ in scalars] == [step for step, _ in logged]
        assert [value for _, value in scalars] == pytest.approx([value for _, value in logged], rel=1e-6)
    said = [line for line in (run_dir / "run.log").read_text().splitlines() if "training loss per source" in line]
    assert len(said) == 1 and all(name in said[0] for name in sources), said


SMALL = """
name = "small"
eval_matrix = false
[model]
path = "bundled:tiny-qwen2"
[defaults]
learning_rate = 1e-2
cutoff_len = 32
per_device_train_batch_size = 2
gradient_accumulation_steps = 1
logging_steps = 1
max_steps = 4
val_size = 2
eval_steps = 2
[[stages]]
name = "pre"
kind = "pretrain"
loss = "standard"
[[stages.data]]
path = "bees.jsonl"
format = "text"
[[stages.data]]
path = "wasps.jsonl"
format = "text"
[[stages]]
name = "chat"
kind = "sft"
cutoff_len = 128
[[stages.data]]
path = "chat.jsonl"
format = "messages"
"""


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("small")
    for name in ("bees", "wasps"):
        write(folder / f"{name}.jsonl", "".join(json.dumps({"text": f"{name} {i}: " + "they fly and build. " * 8})
                                                + "\n" for i in range(12)))
    write(folder / "chat.jsonl", "".join(json.dumps({"messages": [
        {"role": "user", "content": f"Question {i} about bees?"},
        {"role": "assistant", "content": f"Answer {i}: bees make honey."}]}) + "\n" for i in range(12)))
    recipe = write(folder / "small.toml", SMALL)
    result = CliRunner().invoke(main, ["run", str(recipe), "-o", str(folder / "run")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return recipe, folder / "run", result.output


def test_eval_matrix_false_evaluates_each_stage_on_its_own_sets(small_run):
    _, run_dir, _ = small_run
    pre, chat = (stage_json(run_dir, name)["eval_matrix"] for name in ("pre", "chat"))
    assert sorted(pre["after"]) == ["pre/val/bees", "pre/val/wasps"]  # val_size held out of each source
    assert sorted(chat["after"]) == ["chat/val"]  # not the first stage's sets


def test_val_size_as_a_count_and_evaluation_every_eval_steps(small_run):
    recipe, run_dir, _ = small_run
    result = CliRunner().invoke(main, ["data", "inspect", str(recipe), "--json", "-n", "0"])
    assert result.exit_code == 0, result.output
    pre, chat = json.loads(result.output)["stages"]
    assert (pre["held_out"], chat["held_out"]) == (2, 2)  # two examples, not a share (of two sources: one each)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for stage in ("pre", "chat"):  # before the stage, every 2 steps of 4, and after it (at step 4)
        steps = {row["step"] for row in rows if row.get("stage") == stage
                 and any(key.startswith("eval_") and key.endswith("_loss") for key in row)}
        assert sorted(steps) == [0, 2, 4], (stage, steps)


def test_the_standard_loss_says_it_has_no_per_source_loss(small_run):
    _, run_dir, output = small_run
    assert "note: the 'standard' loss gives no per-token losses, so no per-source training loss" in output
    assert not any(key.startswith("source_loss/") for row in read_metrics(run_dir / "metrics.jsonl")["pre"]["train"]
                   for key in row)


def test_the_evaluation_batch_defaults_to_the_training_batch_and_plan_counts_it(tmp_path, tiny_model):
    from recipes.config.load import load_recipe
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry
    from recipes.training.trainer import training_arguments

    for name in ("bees", "wasps"):
        write(tmp_path / f"{name}.jsonl", "".join(json.dumps({"text": f"Bees fly {i}."}) + "\n" for i in range(4)))
    write(tmp_path / "chat.jsonl", "".join(json.dumps({"messages": [{"role": "user", "content": "Who?"},
                                                                    {"role": "assistant", "content": "Bees."}]}) + "\n"
                                           for _ in range(4)))
    registry = get_registry()
    seen = {}
    for batch in (None, 8):
        text = SMALL if batch is None else SMALL.replace("max_steps = 4", f"max_steps = 4\nper_device_eval_batch_size = {batch}")
        path = write(tmp_path / f"r{batch}.toml", text)
        stage = make_plan(load_recipe(str(path), registry), registry, str(tmp_path / "run")).stages[0]
        args = training_arguments(stage, "fp32", "cpu", None)
        result = CliRunner().invoke(main, ["plan", str(path), "--json"])
        assert result.exit_code == 0, result.output
        memory = json.loads(result.output)["stages"][0]["memory"]
        text_plan = CliRunner().invoke(main, ["plan", str(path)], env={"COLUMNS": "200"}).output
        seen[batch] = (args.per_device_eval_batch_size, memory["eval_batch"], memory["evaluation"], text_plan)
    assert seen[None][:2] == (2, 2)  # the training batch
    assert seen[8][:2] == (8, 8) and seen[8][2] > seen[None][2]
    assert "evaluation" in seen[8][3] and "(batch 8 x 32" in seen[8][3] and "(batch 2 x 32" in seen[None][3]
