"""The installed W&B tracker through the real host, in W&B's offline mode (no account, no network):
found by its entry point, named by a recipe, and after a two-stage run on the tiny model the offline
run folder holds the recipe as config, both stages' metrics on their own step axes, the report's PNGs
and the evaluation matrix (read back from W&B's own record file)."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

# the checks every tracker plugin shares, in the host's tests folder (no conftest.py here: run beside
# the host's tests, a second module named conftest would shadow theirs)
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
import tracker_support as tracker  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def private_caches(tmp_path_factory):
    """Private HF and recipes caches and W&B offline, restored afterwards."""
    with tracker.private_caches(tmp_path_factory.mktemp("wandb_caches"), drop=("WANDB_PROJECT",),
                                WANDB_MODE="offline", WANDB_SILENT="true"):
        yield


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
    tracker.check_entry_point("wandb", "recipes-wandb", "Weights & Biases run")


def test_a_two_stage_run_leaves_both_stages_in_the_offline_run_folder(tmp_path):
    run_dir = tracker.run_demo(tmp_path, "wandb")
    run_id = (run_dir / "wandb_run_id").read_text().strip()
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
    for stage in ("domain", "sft"):
        logged = [(h[f"{stage}/step"], h[f"{stage}/loss"]) for h in history if f"{stage}/loss" in h]
        assert [step for step, _ in logged] == [1, 2, 3], stage
        assert [loss for _, loss in logged] == pytest.approx(tracker.jsonl_losses(run_dir, stage)), stage
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
    tracker.check_other_ranks_build_nothing("wandb", tmp_path, monkeypatch)


def test_without_the_plugin_validate_names_the_package(tmp_path, monkeypatch):
    tracker.check_validate_names_the_package("wandb", "recipes-wandb", tmp_path, monkeypatch)
