"""The installed MLflow tracker through the real host: found by its entry point, named by a recipe,
and after a two-stage run on the tiny model its file store holds the run name, the resolved recipe,
both stages' metrics and the report's PNGs (read back with MLflow's own client and as files)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipes.cli import main
from recipes.plugins.registry import get_registry

# no conftest.py here: run beside the host's tests, a second module named conftest would shadow theirs
ENV = ("HF_HUB_OFFLINE", "HF_HOME", "RECIPES_CACHE", "MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE")


@pytest.fixture(scope="module", autouse=True)
def private_caches(tmp_path_factory):
    saved = {k: os.environ.get(k) for k in ENV}
    root = tmp_path_factory.mktemp("mlflow_caches")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["HF_HUB_OFFLINE"] = "1"
    session = tmp_path_factory.getbasetemp().parent  # caches the host's tests made this session: kept (one tiny model)
    for key, value in (("HF_HOME", root / "hf"), ("RECIPES_CACHE", root / "recipes")):
        if not Path(os.environ.get(key, "/")).is_relative_to(session):
            os.environ[key] = str(value)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def demo_recipe(tmp_path, steps: int = 3):
    """The bundled two-stage demo at a few steps, with the tracker named."""
    from qwen_recipes import bundled_recipes

    text = bundled_recipes()["demo"].read_text(encoding="utf-8")
    text = text.replace("[model]", 'callbacks = ["metrics_jsonl", "mlflow"]\n\n[model]', 1)
    text = text.replace("cutoff_len = 256", "cutoff_len = 64").replace(
        "logging_steps = 2\n", f"logging_steps = 1\nmax_steps = {steps}\neval_steps = {steps}\n")
    # without the exam and the samples: the tracker logs neither, they would only cost scoring and generation
    text, left_out = re.subn(r"^\[\[benchmarks\]\]\n(?:[^\[\n].*\n|\n)*|^samples.*\n", "", text, flags=re.M)
    assert left_out == 3, text
    recipe = tmp_path / "demo_mlflow.toml"
    recipe.write_text(text, encoding="utf-8")
    return recipe


def test_the_tracker_is_loaded_from_its_entry_point():
    registry = get_registry()
    assert registry.info["mlflow"].source == "recipes-mlflow"
    assert registry.callbacks["mlflow"].finish is not None and not registry.callbacks["mlflow"].default
    result = CliRunner().invoke(main, ["plugins"])
    assert "mlflow 0.1.0 (recipes-mlflow)" in result.output and "callback:mlflow: MLflow run" in result.output


def test_a_two_stage_run_leaves_both_stages_in_the_file_store(tmp_path):
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(demo_recipe(tmp_path)), "--output-dir", str(run_dir)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    assert f"mlflow: run {run_id} (demo)" in result.output

    client = MlflowClient((run_dir / "mlflow").as_uri())
    run = client.get_run(run_id)
    assert run.info.run_name == "demo" and run.info.status == "FINISHED"
    recipe = json.loads((run_dir / "recipe.json").read_text())
    assert run.data.params["recipe.name"] == recipe["recipe"]["name"] == "demo"
    assert run.data.params["stages.1.name"] == recipe["stages"][1]["name"] == "sft"
    for stage in ("domain", "sft"):
        losses = client.get_metric_history(run_id, f"{stage}/loss")
        assert [m.step for m in losses] == [1, 2, 3], stage
        assert all(m.value > 0 for m in losses)
        # before and after training; the demo's domain stage holds out a share of each of its two sources
        held = "val/domain_corpus" if stage == "domain" else "val"
        evals = client.get_metric_history(run_id, f"{stage}/eval_{held}_loss")
        assert {0, 3} <= {m.step for m in evals}, stage
    # the same numbers as metrics.jsonl, the host's own record
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    jsonl = [r["loss"] for r in rows if r.get("stage") == "sft" and "loss" in r]
    assert [m.value for m in client.get_metric_history(run_id, "sft/loss")] == pytest.approx(jsonl)
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "report")}
    assert {"recipe.json", "report/loss.png", "report/report.md"} <= artifacts
    # and as plain files, for a reader without MLflow
    [run_folder] = [p for p in (run_dir / "mlflow").glob(f"*/{run_id}")]
    assert (run_folder / "metrics" / "domain" / "loss").read_text().count("\n") >= 2
    assert (run_folder / "artifacts" / "report" / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_other_ranks_build_no_tracker(tmp_path, monkeypatch):
    from recipes.api import StageContext

    monkeypatch.setenv("RANK", "1")
    context = StageContext(run_dir=tmp_path, stage_name="domain", stage_index=0, stage_count=2, console=None,
                           metrics_path=tmp_path / "metrics.jsonl")
    assert get_registry().callbacks["mlflow"].build(context) is None
    assert not list(tmp_path.iterdir())
