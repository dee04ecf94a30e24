"""Through the real `recipes prepare` and `recipes data inspect --json`, on a corpus with planted copies
(Chinese and English; tests/planted_corpus.py): every exact copy removed, at least 90% of the near copies
(2-5% of the characters changed) removed and named as duplicates of what they copy, no distinct document
removed, the training document carrying a paragraph of the evaluation set removed as contaminated, and
the counts per source and reason in the JSON."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipes.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from planted_corpus import plant  # noqa: E402

RECIPE = """
[model]
path = "bundled:tiny-qwen2"
[defaults]
cutoff_len = 128
[[stages]]
name = "domain"
kind = "pretrain"
[[stages.data]]
path = "zh.jsonl"
format = "text"
dedup = "near"
near_threshold = 0.5
[[stages.data]]
path = "en.jsonl"
format = "text"
dedup = "near"
near_threshold = 0.5
[[stages.eval_data]]
path = "eval.jsonl"
format = "text"
name = "held"
"""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The planted corpus prepared once (the session's caches when the host's tests set them)."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "RECIPES_CACHE")}
    root = tmp_path_factory.mktemp("planted_run")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("RECIPES_CACHE", str(root / "cache"))
    planted = plant(root / "data", distinct=40, exact=8, near=30, seed=11)
    recipe = root / "data" / "recipe.toml"
    recipe.write_text(RECIPE, encoding="utf-8")
    runner = CliRunner()
    prepare = runner.invoke(main, ["prepare", str(recipe)])
    inspect = runner.invoke(main, ["data", "inspect", str(recipe), "--json", "--removed", "-n", "10"])
    yield planted, prepare, inspect
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _kept_places(output: str) -> set[str]:
    """The places of every document the stores kept (each shard lists them, a JSON string a line)."""
    folders = re.findall(r"prepared into the store (\S+) \(", output)
    assert len(folders) == 2, output
    return {json.loads(line) for folder in folders for shard in sorted(Path(folder).glob("shard-*.places.jsonl"))
            for line in shard.read_text(encoding="utf-8").splitlines()}


def test_planted_copies_go_distinct_documents_stay(prepared):
    planted, prepare, _ = prepared
    assert prepare.exit_code == 0, prepare.output + repr(prepare.exception)
    kept = _kept_places(prepare.output)
    assert not [p for p in planted.distinct if p not in kept]  # no distinct document removed
    assert not [p for p in planted.exact if p in kept]  # every exact copy removed
    for language in ("zh", "en"):
        near = [p for p in planted.near if f"{language}.jsonl" in p]
        assert sum(p not in kept for p in near) >= 0.9 * len(near), (language, [p for p in near if p in kept])
    assert not [p for p in planted.contaminated if p in kept]
    assert "decontamination: " in prepare.output and "eval set 'held' of stage 'domain'" in prepare.output
    assert "contaminated 1 (" in prepare.output


def test_inspect_counts_each_reason_and_names_what_was_duplicated(prepared):
    planted, prepare, inspect = prepared
    assert inspect.exit_code == 0, inspect.output + repr(inspect.exception)
    stage = json.loads(inspect.output)["stages"][0]
    removed = stage["removed"]
    kept = _kept_places(prepare.output)
    for name in ("zh", "en"):
        near = sum(p not in kept for p in planted.near if f"/{name}.jsonl" in p)
        assert removed[name]["exact"]["documents"] == 8
        assert removed[name]["near"]["documents"] == near
        assert removed[name]["near"]["tokens"] > 0
    assert removed["en"]["contaminated"]["documents"] == 1 and "contaminated" not in removed["zh"]
    examples = [e for found in stage["removed_examples"].values() for e in found]
    near = [e for e in examples if e["reason"] == "near"]
    assert len(near) == 20  # ten per source
    for example in near:
        assert re.fullmatch(r"near duplicate \(0\.\d\d\) of \S+", example["detail"]), example
        assert example["detail"].rsplit(" of ", 1)[1] == planted.origin[example["place"]]
    contaminated = next(e for e in examples if e["reason"] == "contaminated")
    assert contaminated["place"] == planted.contaminated[0]
    assert contaminated["detail"] == "shares 13 words with eval set 'held' of stage 'domain'"


def test_a_changed_evaluation_set_prepares_the_training_data_again(prepared):
    planted, _, _ = prepared
    recipe = planted.eval_file.parent / "recipe.toml"
    runner = CliRunner()
    again = runner.invoke(main, ["prepare", str(recipe)])
    assert again.exit_code == 0 and "prepared into the store" not in again.output  # nothing changed: ready
    rows = planted.eval_file.read_text(encoding="utf-8").splitlines()
    planted.eval_file.write_text("\n".join(rows[1:]) + "\n", encoding="utf-8")  # the copied paragraph's set row gone
    changed = runner.invoke(main, ["prepare", str(recipe)])
    assert changed.exit_code == 0, changed.output
    assert len(re.findall(r"prepared into the store", changed.output)) == 2
    assert "contaminated" not in changed.output and "2 texts from 1 reference set(s)" in changed.output
