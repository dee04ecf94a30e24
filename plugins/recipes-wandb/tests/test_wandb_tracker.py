"""The installed W&B tracker through the real host, in W&B's offline mode (no account, no network):
found by its entry point, named by a recipe, and after a two-stage run on the tiny model the offline
run folder holds the recipe as config, both stages' metrics on their own step axes, the report's PNGs
and the evaluation matrix (read back from W&B's own record file)."""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipes.cli import main
from recipes.plugins.registry import get_registry

# no conftest.py here: run beside the host's tests, a second module named conftest would shadow theirs


@pytest.fixture(scope="module", autouse=True)
def private_caches(tmp_path_factory):
    """Private HF and recipes caches and W&B offline, restored afterwards. Caches that the host's
    tests already made for this session (under pytest's temporary folders) are kept: the tiny model
    and its token stores are built once per session, not again here."""
    root = tmp_path_factory.mktemp("wandb_caches")
    session = tmp_path_factory.getbasetemp().parent
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("WANDB_PROJECT", raising=False)
        for key, value in dict(HF_HUB_OFFLINE="1", HF_HOME=str(root / "hf"), RECIPES_CACHE=str(root / "recipes"),
                               WANDB_MODE="offline", WANDB_SILENT="true").items():
            if key in ("HF_HOME", "RECIPES_CACHE") and Path(os.environ.get(key, "/")).is_relative_to(session):
                continue
            patch.setenv(key, value)
        yield


def demo_recipe(tmp_path, steps: int = 3):
    """The bundled two-stage demo at a few steps, with the tracker named; without its samples and
    benchmark (the tracker logs neither: they would only cost generation and scoring time)."""
    from qwen_recipes import bundled_recipes

    text = bundled_recipes()["demo"].read_text(encoding="utf-8")
    text = text.replace("[model]", 'callbacks = ["metrics_jsonl", "wandb"]\n\n[model]', 1)
    text = text.replace("cutoff_len = 256", "cutoff_len = 64").replace(
        "logging_steps = 2\n", f"logging_steps = 1\nmax_steps = {steps}\n")
    text, left_out = re.subn(r"^\[\[benchmarks\]\]\n(?:[^\[\n].*\n|\n)*|^samples.*\n", "", text, flags=re.M)
    assert left_out == 3, text  # the exam and both sample lines
    recipe = tmp_path / "demo_wandb.toml"
    recipe.write_text(text, encoding="utf-8")
    return recipe


def records(path: Path, block: int = 32768):
    """The records of a W&B run file (``run-<id>.wandb``): LevelDB's log format (32 KiB blocks, each
    record a 7-byte header: checksum, length, type full/first/middle/last) after W&B's 7-byte header,
    each record one ``wandb_internal_pb2.Record``. W&B 0.31 ships no Python reader for it."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full, or the last piece
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_the_tracker_is_loaded_from_its_entry_point():
    registry = get_registry()
    assert registry.info["wandb"].source == "recipes-wandb"
    assert registry.callbacks["wandb"].finish is not None and not registry.callbacks["wandb"].default
    result = CliRunner().invoke(main, ["plugins"])
    assert "wandb 0.1.0 (recipes-wandb)" in result.output and "callback:wandb: Weights & Biases run" in result.output


def test_a_two_stage_run_leaves_both_stages_in_the_offline_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(demo_recipe(tmp_path)), "--output-dir", str(run_dir)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    assert f"wandb: run {run_id} (demo)" in result.output
    [folder] = (run_dir / "wandb").glob(f"offline-run-*-{run_id}")  # one W&B run for both stages
    history, config = [], {}
    for record in records(folder / f"run-{run_id}.wandb"):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
        elif kind == "run":
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
    recipe = json.loads((run_dir / "recipe.json").read_text())
    assert config["recipe"]["name"] == recipe["recipe"]["name"] == "demo"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for stage in ("domain", "sft"):
        logged = [(h[f"{stage}/step"], h[f"{stage}/loss"]) for h in history if f"{stage}/loss" in h]
        assert [step for step, _ in logged] == [1, 2, 3], stage
        jsonl = [r["loss"] for r in rows if r.get("stage") == stage and "loss" in r]
        assert [loss for _, loss in logged] == pytest.approx(jsonl), stage  # the host's own record
        evals = [h[f"{stage}/step"] for h in history if any(k.startswith(f"{stage}/eval_") for k in h)]
        assert {0, 3} <= set(evals), stage  # before and after training
    # the end of the run: media are logged as nested keys (report/loss/_type, report/loss/path, ...)
    [final] = [h for h in history if "report/loss/_type" in h]
    assert final["report/loss/_type"] == "image-file"
    assert final["report/eval_matrix_table/_type"] == "table-file"
    png = folder / "files" / final["report/loss/path"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert (folder / "files" / "report" / "report.md").is_file()


def test_other_ranks_build_no_tracker(tmp_path, monkeypatch):
    from recipes.api import StageContext

    monkeypatch.setenv("RANK", "1")
    context = StageContext(run_dir=tmp_path, stage_name="domain", stage_index=0, stage_count=2, console=None,
                           metrics_path=tmp_path / "metrics.jsonl")
    assert get_registry().callbacks["wandb"].build(context) is None
    assert not list(tmp_path.iterdir())


def test_without_the_plugin_validate_names_the_package(tmp_path, monkeypatch):
    from importlib import metadata

    from recipes.plugins import registry

    others = [ep.name for ep in metadata.entry_points(group=registry.ENTRY_POINT_GROUP) if ep.name != "wandb"]
    monkeypatch.setenv("RECIPES_PLUGINS", ",".join(others))  # every installed plugin but this one
    monkeypatch.setattr(registry, "_cached", None)  # restored after the test
    result = CliRunner().invoke(main, ["validate", str(demo_recipe(tmp_path))])
    assert result.exit_code == 2, result.output
    assert "unknown callback 'wandb'; the plugin package recipes-wandb provides it" in result.output
