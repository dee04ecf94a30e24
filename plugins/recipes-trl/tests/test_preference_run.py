"""Preference stages through the real host and TRL: pre-training -> SFT -> DPO on LLaMA-Factory's
ranking data through its dataset_info.json entry as it is, a KTO stage on its KTO format, the
preference figures before and after in stage.json and the report, `recipes data inspect` showing
chosen and rejected side by side, and the validate rules."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trl_test_support import LF_DATA, caches  # noqa: F401 (an autouse fixture)
from click.testing import CliRunner

from recipes.cli import main



def copy_data(folder: Path) -> Path:
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name in ("dataset_info.json", "dpo_en_demo.json", "kto_en_demo.json", "alpaca_en_demo.json"):
        shutil.copy(LF_DATA / name, data / name)
    # distinct lines: exact copies would be removed from the pre-training stage
    (data / "notes.txt").write_text("".join(f"Bees keep the hive warm in winter by shivering around the queen ({i}).\n"
                                            for i in range(40)))
    return data


THREE_STAGES = """
name = "bees_dpo"
samples = ["What do bees make?"]
samples_max_new_tokens = 8
[model]
path = "bundled:tiny-qwen2"
[defaults]
max_steps = 2
warmup_steps = 0
per_device_train_batch_size = 2
gradient_accumulation_steps = 1
logging_steps = 1
save_steps = 1
[[stages]]
name = "domain"
kind = "pretrain"
cutoff_len = 32
learning_rate = 1e-3
[[stages.data]]
path = "data/notes.txt"
format = "text"
[[stages]]
name = "sft"
kind = "sft"
cutoff_len = 96
learning_rate = 1e-4
val_size = 1
[[stages.data]]
dataset_info = "data/dataset_info.json"
dataset = "alpaca_en_demo"
[[stages]]
name = "align"
kind = "dpo"
cutoff_len = 128
learning_rate = 5e-3
val_size = 4
kind_options = {beta = 0.1, max_prompt_len = 48}
[[stages.data]]
dataset_info = "data/dataset_info.json"
dataset = "dpo_en_demo"
"""


@pytest.fixture(scope="module")
def three_stage_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dpo_run")
    copy_data(folder)
    recipe = folder / "bees_dpo.toml"
    recipe.write_text(THREE_STAGES, encoding="utf-8")
    result = CliRunner().invoke(main, ["run", str(recipe), "--output-dir", str(folder / "run")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return folder, result.output


def test_pretrain_sft_dpo_runs_on_llamafactory_ranking_data(three_stage_run):
    folder, output = three_stage_run
    run = folder / "run"
    stage = json.loads((run / "stages" / "align" / "stage.json").read_text())
    assert stage["kind"] == "dpo" and stage["steps"] == 2
    assert stage["data"]["records"] == 10 and stage["data"]["held_out"] == 4 and stage["data"]["examples"] == 6
    before, after = stage["eval_before"]["val"], stage["eval_after"]["val"]
    # at the start the policy is its reference (a new adapter, disabled = the SFT model): every reward 0
    assert before["accuracy"] == 0.5 and before["margin"] == 0.0 and before["pairs"] == 4
    assert after["margin"] != 0.0  # it trained
    assert "reference: the starting model (the new adapter disabled)" in output
    assert (run / "stages" / "align" / "merged" / "config.json").is_file()
    report = (run / "report" / "report.md").read_text()
    assert "## Preference" in report
    line = next(line for line in report.splitlines() if line.startswith("- align (val, 4 pairs)"))
    assert f"preference accuracy 0.500 -> {after['accuracy']:.3f}" in line
    assert f"reward margin +0.0000 -> {after['margin']:+.4f}" in line
    data = json.loads((run / "report" / "report.json").read_text())
    matrix = data["eval_matrix"]
    assert {"align/val", "sft/val"} <= set(matrix["sets"])
    rows = {row["after"]: row["results"] for row in matrix["rows"]}
    assert rows["align"]["sft/val"]["perplexity"] > 1  # what SFT taught, measured after DPO: does it hold?
    assert rows["sft"]["align/val"]["accuracy"] == 0.5  # before the DPO stage: on the row of the model it starts from
    assert rows["align"]["align/val"]["margin"] == after["margin"]
    samples = json.loads((run / "stages" / "align" / "stage.json").read_text()).get("samples") or data["samples"]
    assert samples  # the recipe's sample is answered after the DPO stage too


def test_a_rerun_skips_and_the_fingerprint_covers_the_kind_options(three_stage_run):
    folder, _ = three_stage_run
    recipe = folder / "bees_dpo.toml"
    again = CliRunner().invoke(main, ["run", str(recipe), "--output-dir", str(folder / "run")])
    assert again.exit_code == 0 and again.output.count("skipped") == 3, again.output
    from recipes.config.load import load_recipe
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry
    from recipes.run.fingerprint import stage_parts, why_changed

    registry = get_registry()
    changed = folder / "beta.toml"
    changed.write_text(THREE_STAGES.replace("beta = 0.1", "beta = 0.3"), encoding="utf-8")
    parts = []
    for path in (recipe, changed):
        plan = make_plan(load_recipe(str(path), registry), registry, str(folder / "run"))
        parts.append(stage_parts(plan, plan.stages[2], "same base", registry, None))
    assert parts[0]["kind_options"]["beta"] == 0.1 and parts[1]["kind_options"]["beta"] == 0.3
    assert parts[0] != parts[1] and why_changed(parts[0], parts[1])


def test_a_stopped_dpo_stage_resumes_from_its_checkpoint(three_stage_run, tmp_path):
    """Stopped after its first step (as Ctrl-C stops a stage), the DPO stage resumes from that
    checkpoint; the stages before it are kept."""
    from rich.console import Console
    from transformers import TrainerCallback

    from recipes.api import CallbackPlugin
    from recipes.config.load import load_recipe
    from recipes.errors import Interrupted
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry
    from recipes.run.runner import run_plan
    from recipes.training.interrupts import STOP

    folder, _ = three_stage_run
    run_dir = tmp_path / "run"
    shutil.copytree(folder / "run", run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    del manifest["stages"]["align"]  # forget the DPO stage: it trains again
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(run_dir / "stages" / "align")

    class StopAfterAStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            STOP.requested = True

    registry = get_registry()
    plan = make_plan(load_recipe(str(folder / "bees_dpo.toml"), registry), registry, str(run_dir))
    plan.callbacks.append(CallbackPlugin("stop", lambda c: StopAfterAStep() if c.stage_name == "align" else None))
    out = tmp_path / "out.txt"
    with pytest.raises(Interrupted, match="stage 'align' stopped at step 1"):
        run_plan(plan, Console(file=open(out, "w"), width=200), registry)
    plan = make_plan(load_recipe(str(folder / "bees_dpo.toml"), registry), registry, str(run_dir))
    [result] = run_plan(plan, Console(file=open(out, "w"), width=200), registry)
    output = out.read_text()
    assert "resuming from checkpoint-1" in output and output.count("skipped") == 2
    assert result.name == "align" and result.steps == 2


def test_data_inspect_shows_chosen_and_rejected_side_by_side(three_stage_run):
    folder, _ = three_stage_run
    result = CliRunner().invoke(main, ["data", "inspect", str(folder / "bees_dpo.toml"), "--stage", "align", "-n", "1",
                                       "--json"])
    assert result.exit_code == 0, result.output
    [report] = json.loads(result.output)["stages"]
    assert report["counts"]["records"] == 10
    [example] = report["examples"]
    assert set(example) == {"chosen", "rejected"}
    for side in example.values():
        untrained = "".join(p["text"] for p in side if not p["trained"])
        trained = "".join(p["text"] for p in side if p["trained"])
        assert untrained.endswith("<|im_start|>assistant\n") and trained.endswith("<|im_end|>")
    assert example["chosen"][0]["text"] == example["rejected"][0]["text"]  # the same prompt
    shown = CliRunner().invoke(main, ["data", "inspect", str(folder / "bees_dpo.toml"), "--stage", "align", "-n", "1"])
    assert shown.exit_code == 0 and "chosen" in shown.output and "rejected" in shown.output


def test_validate_warns_when_a_preference_stage_follows_pretraining(tmp_path):
    copy_data(tmp_path)
    text = THREE_STAGES.replace('name = "align"\nkind = "dpo"', 'name = "align"\nkind = "dpo"\nbase = "domain"')
    recipe = tmp_path / "r.toml"
    recipe.write_text(text, encoding="utf-8")
    from recipes.config.load import check_recipe
    from recipes.plugins.registry import get_registry

    checked = check_recipe(str(recipe), get_registry())
    assert not checked.problems, checked.problems
    warned = [str(w) for w in checked.warnings if "stages[2].base" in str(w)]
    assert warned and "this dpo stage starts from pretrain stage 'domain'" in warned[0]
    control = check_recipe(str(_write(tmp_path / "ok.toml", THREE_STAGES)), get_registry())
    assert not [w for w in control.warnings if "starts from pretrain stage" in str(w)]
    stacked = _write(tmp_path / "stack.toml", THREE_STAGES.replace("val_size = 4", 'val_size = 4\nchaining = "stack"'))
    result = CliRunner().invoke(main, ["validate", str(stacked)])
    assert result.exit_code == 2 and "stages[2].chaining: a preference stage cannot stack" in result.output


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_a_bad_preference_record_is_located(tmp_path):
    from recipes.errors import RecipeError
    from recipes.plugins.registry import get_registry

    path = _write(tmp_path / "prefs.jsonl", json.dumps({"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go."}) + "\n"
                  + json.dumps({"prompt": "Hi?", "chosen": "Same.", "rejected": "Same."}) + "\n")
    fmt = get_registry().formats["preference"]
    records = fmt.read(path, fmt.options_model())
    first = next(records)
    assert first["prompt"] == [{"role": "user", "content": "Hi?"}] and first["chosen"][0]["content"] == "Hello."
    with pytest.raises(RecipeError, match=r"prefs.jsonl:2: the chosen and the rejected answer are the same"):
        next(records)


def test_the_peers_preference_shapes_read_into_one_record(tmp_path):
    from recipes.plugins.registry import get_registry

    user = {"role": "user", "content": "Name a bee."}
    good, bad = {"role": "assistant", "content": "Apis."}, {"role": "assistant", "content": "Ant."}
    rows = [
        {"prompt": [user], "chosen": [good], "rejected": [bad]},  # TRL, conversational
        {"chosen": [user, good], "rejected": [user, bad]},  # TRL, implicit prompt
        {"chosen_messages": [user, good], "rejected_messages": [user, bad]},  # LLaMA-Factory v1
        {"messages": [user, good], "rejected_response": "Ant."},  # ms-swift
    ]
    path = _write(tmp_path / "shapes.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    fmt = get_registry().formats["preference"]
    records = [{k: v for k, v in r.items() if k != "_where"} for r in fmt.read(path, fmt.options_model())]
    assert records == [{"prompt": [user], "chosen": [good], "rejected": [bad]}] * 4


KTO = """
[model]
path = "bundled:tiny-qwen2"
[[stages]]
name = "kto"
kind = "kto"
cutoff_len = 64
max_steps = 2
warmup_steps = 0
per_device_train_batch_size = 2
gradient_accumulation_steps = 1
learning_rate = 5e-3
val_size = 2
save_steps = 1
[[stages.data]]
dataset_info = "data/dataset_info.json"
dataset = "kto_en_demo"
"""


def test_a_kto_stage_runs_on_llamafactory_kto_data(tmp_path):
    copy_data(tmp_path)
    recipe = _write(tmp_path / "kto.toml", KTO)
    result = CliRunner().invoke(main, ["run", str(recipe), "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    stage = json.loads((tmp_path / "run" / "stages" / "kto" / "stage.json").read_text())
    assert stage["kind"] == "kto" and stage["steps"] == 2
    assert stage["data"]["desirable"] + stage["data"]["undesirable"] == 8  # counted before the held-out share
    assert stage["data"]["examples"] == 6 and stage["data"]["held_out"] == 2
    assert stage["eval_before"]["val"]["accuracy"] == 0.5 and stage["eval_before"]["val"]["examples"] == 2
    assert stage["eval_after"]["val"]["accuracy"] != 0.5 or stage["eval_after"]["val"]["margin"] != 0.0
    assert "kto: beta 0.1, kto loss" in result.output
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "- kto (val, 2 examples): preference accuracy 0.500 -> " in report


def test_a_dpo_recipe_without_the_plugin_names_it(tmp_path):
    copy_data(tmp_path)
    recipe = _write(tmp_path / "r.toml", THREE_STAGES)
    result = subprocess.run([sys.executable, "-m", "recipes", "validate", str(recipe)], capture_output=True, text=True,
                            env={**os.environ, "RECIPES_PLUGINS": "qwen"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unknown stage kind 'dpo'; the plugin package recipes-trl provides it" in result.stderr.replace("\n", " ")
    assert "unknown data format 'sharegpt_preference'; the plugin package recipes-trl" in result.stderr.replace("\n", " ")
