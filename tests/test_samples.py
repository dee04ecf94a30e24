"""The recipe's samples: answered greedily by the starting model and every stage of the real demo run,
kept in stage.json, the manifest and model_samples.json, said in run.log, side by side in the report;
validated with file, line and field; changing them retrains nothing."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from conftest import GOOD_RECIPE, write
from recipes.cli import main
from recipes.config.load import load_recipe
from recipes.errors import RecipeError

DEMO_SAMPLES = ["A strong colony in spring", "How do bees survive the winter?"]


def test_demo_report_shows_each_sample_for_the_model_and_both_stages(demo_run):
    run_dir, output = demo_run
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert [s["prompt"] for s in report["samples"]] == DEMO_SAMPLES
    for sample in report["samples"]:
        assert [(a["by"], a["mode"]) for a in sample["answers"]] == [
            ("model", "text"), ("domain", "text"), ("model", "chat"), ("sft", "chat")]
        assert all(a["answer"] and 0 < a["new_tokens"] <= 32 for a in sample["answers"])
    markdown = (run_dir / "report" / "report.md").read_text()
    samples = markdown[markdown.index("## Samples"):]
    assert "### 1. A strong colony in spring" in samples and "### 2. How do bees survive the winter?" in samples
    assert samples.count("| model | text |") == samples.count("| domain | text |") == 2
    assert samples.count("| model | chat |") == samples.count("| sft | chat |") == 2
    log = (run_dir / "run.log").read_text()
    for who in ("model", "domain", "sft"):
        assert f'by {who}: "A strong colony in spring" -> ' in log
    assert 'sample 1 continued by domain: "A strong colony in spring"' in output


def test_stage_answers_are_kept_with_the_stage_and_are_greedy_from_its_merged_model(demo_run):
    from recipes.run.samples import answer_samples

    run_dir, _ = demo_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for name, kind in (("domain", "pretrain"), ("sft", "sft")):
        stored = json.loads((run_dir / "stages" / name / "stage.json").read_text())["samples"]
        assert manifest["stages"][name]["result"]["samples"] == stored
        assert [(r["prompt"], r["kind"], r["max_new_tokens"]) for r in stored] == [(p, kind, 32) for p in DEMO_SAMPLES]
        again = answer_samples(run_dir / "stages" / name / "merged", DEMO_SAMPLES, kind, 32)
        assert [r["answer"] for r in again] == [r["answer"] for r in stored]  # greedy: the same again
    model = json.loads((run_dir / "model_samples.json").read_text())
    assert sorted((r["prompt"], r["mode"]) for r in model["samples"]) == sorted(
        (p, mode) for p in DEMO_SAMPLES for mode in ("text", "chat"))


def test_changing_the_samples_retrains_nothing_and_answers_the_new_ones(demo_run, tmp_path):
    from qwen_recipes import bundled_recipes

    run_dir = tmp_path / "run"
    shutil.copytree(demo_run[0], run_dir)
    text = bundled_recipes()["demo"].read_text()
    text = text.replace('samples = ["A strong colony in spring", "How do bees survive the winter?"]',
                        'samples = ["Smoke calms the bees"]').replace("samples_max_new_tokens = 32",
                                                                     "samples_max_new_tokens = 4")
    text = text.replace('kind = "pretrain"', 'kind = "pretrain"\nsamples = []')  # none for the domain stage
    recipe = write(tmp_path / "demo.toml", text)
    result = CliRunner().invoke(main, ["run", str(recipe), "-o", str(run_dir)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert result.output.count("done earlier with the same inputs") == 2
    domain = json.loads((run_dir / "stages" / "domain" / "stage.json").read_text())
    sft = json.loads((run_dir / "stages" / "sft" / "stage.json").read_text())
    assert domain["samples"] == []
    assert [(r["prompt"], r["new_tokens"] <= 4) for r in sft["samples"]] == [("Smoke calms the bees", True)]
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert [(s["prompt"], [a["by"] for a in s["answers"]]) for s in report["samples"]] == [
        ("Smoke calms the bees", ["model", "sft"])]
    # the same again: nothing to answer
    result = CliRunner().invoke(main, ["run", str(recipe), "-o", str(run_dir)])
    assert result.exit_code == 0 and "samples:" not in result.output and " by sft: " not in result.output


@pytest.fixture
def recipe_dir(tmp_path):
    write(tmp_path / "corpus.jsonl", '{"text": "Bees."}\n')
    write(tmp_path / "chat.jsonl", '{"messages": [{"role": "user", "content": "Q"}, '
                                   '{"role": "assistant", "content": "A"}]}\n')
    return tmp_path


def _errors(path) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(str(path))
    return [str(p) for p in info.value.problems]


def test_samples_are_the_recipes_unless_a_stage_gives_its_own(recipe_dir):
    text = 'samples = ["Q1", "Q2"]\n' + GOOD_RECIPE.replace('kind = "pretrain"', 'kind = "pretrain"\nsamples = ["Bees"]')
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry

    loaded = load_recipe(str(write(recipe_dir / "r.toml", text)))
    plan = make_plan(loaded, get_registry())
    assert [s.samples for s in plan.stages] == [("Bees",), ("Q1", "Q2")]
    assert plan.samples_max_new_tokens == 64
    assert "samples" not in load_recipe(str(write(recipe_dir / "n.toml", GOOD_RECIPE))).recipe.model_dump(
        exclude_defaults=True)


def test_bad_samples_are_located(recipe_dir):
    text = ('samples = ["Q1", " "]\nsamples_max_new_tokens = 0\n'
            + GOOD_RECIPE.replace('kind = "sft"', 'kind = "sft"\nsamples = "Hello"'))
    errors = _errors(write(recipe_dir / "r.toml", text))
    assert any(":1:1: samples[1]: " in e and "a sample is empty" in e for e in errors), errors
    assert any(":2:1: samples_max_new_tokens: " in e and "greater than 0" in e for e in errors), errors
    assert any(":18:1: stages[1].samples: " in e and "valid list" in e for e in errors), errors


def test_samples_under_a_table_say_to_move_them_to_the_top(recipe_dir):
    text = GOOD_RECIPE.replace('path = "bundled:tiny-qwen2"', 'path = "bundled:tiny-qwen2"\nsamples = ["Q"]')
    [error] = _errors(write(recipe_dir / "r.toml", text))
    assert ":4:1: model.samples: unknown key 'samples'; 'samples' is a top-level key: move it to the top" in error
