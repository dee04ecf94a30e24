"""The installed SwanLab tracker through the real host, offline (no account; the test refuses every
network connection): found by its entry point, named by a recipe, and after a two-stage run on the tiny
model the SwanLab run folder holds the recipe as config, both stages' metrics on their own steps, the
report's PNGs and the evaluation matrix (read back with SwanLab's own record reader)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
import yaml

# the checks every tracker plugin shares, in the host's tests folder (no conftest.py here: run beside
# the host's tests, a second module named conftest would shadow theirs)
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
import tracker_support as tracker  # noqa: E402

from recipes.api import RunContext  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def private_caches(tmp_path_factory):
    """Private HF, recipes and SwanLab folders; SwanLab's own mode and folder settings unset."""
    root = tmp_path_factory.mktemp("swanlab_caches")
    with tracker.private_caches(root, drop=("SWANLAB_MODE", "SWANLAB_LOG_DIR"), SWANLAB_ROOT=str(root / "swanlab")):
        yield


@pytest.fixture
def no_network(monkeypatch):
    """Any connection over the network fails the run: nothing may log in or upload."""
    tried, connect = [], socket.socket.connect

    def guarded(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            tried.append(address)  # kept: SwanLab may catch the error and carry on
            raise OSError(f"the test refuses network connections ({address})")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield tried


def records(path: Path):
    """The records of a SwanLab run file (``run-<id>.swanlab``), with SwanLab's own reader."""
    from swanlab.proto.swanlab.record.v1.record_pb2 import Record
    from swanlab.sdk.internal.core_python.store import DataStoreReader

    reader = DataStoreReader()
    reader.open(str(path))
    try:
        for data in reader:
            record = Record()
            record.ParseFromString(data)
            yield record
    finally:
        reader.close()


def test_the_tracker_is_loaded_from_its_entry_point():
    tracker.check_entry_point("swanlab", "recipes-swanlab", "SwanLab run")


def test_a_two_stage_run_leaves_both_stages_in_the_run_folder(tmp_path, no_network):
    run_dir = tracker.run_demo(tmp_path, "swanlab", steps=2)
    run_id = (run_dir / "swanlab_run_id").read_text().strip()
    [folder] = (run_dir / "swanlog").glob(f"run-*-{run_id}")  # one SwanLab run for both stages
    scalars, media, kinds = {}, {}, []
    for record in records(folder / f"run-{run_id}.swanlab"):
        kinds.append(record.WhichOneof("record_type"))
        if kinds[-1] == "scalar":
            scalars.setdefault(record.scalar.key, []).append((record.scalar.step, record.scalar.value.number))
        elif kinds[-1] == "media":
            media[record.media.key] = [item.filename for item in record.media.value.items]
    assert kinds[0] == "start" and kinds[-1] == "finish" and not no_network
    config = yaml.safe_load((folder / "files" / "config.yaml").read_text())
    assert config["recipe"]["value"]["name"] == json.loads((run_dir / "recipe.json").read_text())["recipe"]["name"]
    for stage in ("domain", "sft"):
        steps, losses = zip(*scalars[f"{stage}/loss"])
        assert steps == (1, 2), stage  # each stage's own steps
        assert list(losses) == pytest.approx(tracker.jsonl_losses(run_dir, stage)), stage  # the host's record
        evals = {step for key, points in scalars.items() if key.startswith(f"{stage}/eval_") for step, _ in points}
        assert {0, 2} <= evals, stage  # before and after training
    [png] = media["report/loss"]
    assert (folder / "media" / "image" / png).read_bytes()[:4] == b"\x89PNG"
    [table] = media["report/eval_matrix"]
    rows = [[r["after"], r["set"], r["loss"], r["perplexity"]]
            for r in json.loads((folder / "media" / "echarts" / table).read_text())["rowData"]]
    report = RunContext(run_dir, run_dir / "report", "demo", ("domain", "sft"), None)
    assert rows == report.eval_matrix_rows()  # the report's matrix: the starting model, then after each stage
    assert len({after for after, *_ in rows}) == 3 and {"domain", "sft"} <= {after for after, *_ in rows}
    assert (folder / "files" / "report" / "report.md").is_file()


def test_other_ranks_build_no_tracker(tmp_path, monkeypatch):
    tracker.check_other_ranks_build_nothing("swanlab", tmp_path, monkeypatch)


def test_without_the_plugin_validate_names_the_package(tmp_path, monkeypatch):
    tracker.check_validate_names_the_package("swanlab", "recipes-swanlab", tmp_path, monkeypatch)
