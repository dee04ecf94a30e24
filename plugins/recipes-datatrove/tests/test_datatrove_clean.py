"""`recipes-datatrove clean` on a planted corpus, through the real command, the real recipe loader and
datatrove's real executors: the local executor removes every exact copy, nine near copies in ten and
no distinct document, counted per reason beside the shards; it removes the same copies as the built-in
path (`recipes data inspect --json` with recipes-near-dedup); `recipes prepare` then tokenizes the
shards with nothing left to remove; the Slurm scripts it would submit are generated (and their
pickled pipelines run as Slurm would run them, without Slurm); bad input is one line, exit code 2."""

from __future__ import annotations

import gzip
import json
import os
import sys
import tomllib
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from datatrove_corpus import plant  # noqa: E402

from recipes_datatrove.cli import main  # noqa: E402

RECIPE = """\
name = "clean-test"
[model]
path = "bundled:tiny-qwen2"

[[stages]]
name = "cpt"
kind = "pretrain"

[[stages.data]]
name = "zh"
path = "data/zh-*.jsonl"
format = "text"
dedup = "near"
filters = {length = {min_chars = 50}}
weight = 1.0

[[stages.data]]
name = "en"
path = "data/en-*.jsonl"
format = "text"
dedup = "near"
weight = 2.0

[[stages.eval_data]]
path = "data/eval.jsonl"
format = "text"
"""


@pytest.fixture(scope="module", autouse=True)
def caches(tmp_path_factory):
    """No network; the session's caches when the host's tests set them (the tiny model is built once)."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_HOME", "RECIPES_CACHE")}
    root = tmp_path_factory.mktemp("datatrove_caches")
    os.environ.update(HF_HUB_OFFLINE="1")
    os.environ.setdefault("HF_HOME", str(root / "hf"))
    os.environ.setdefault("RECIPES_CACHE", str(root / "recipes"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planted")
    truth = plant(folder / "data", distinct=40, exact=12, near=40)
    (folder / "recipe.toml").write_text(RECIPE, encoding="utf-8")
    return folder, {Path(p.place).name: p for p in truth}


def clean(*args: str):
    result = CliRunner().invoke(main, ["clean", *args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def cleaned(corpus):
    folder, truth = corpus
    code, output = clean(str(folder / "recipe.toml"), "--stage", "cpt", "--out", str(folder / "out"),
                         "--tasks", "3", "--workers", "2")
    assert code == 0, output
    return folder / "out", truth, output


def rows(folder: Path, pattern: str) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob(pattern)) for line in gzip.open(path, "rt")]


def test_local_executor_removes_the_planted_copies_and_counts_them(cleaned):
    out, truth, output = cleaned
    assert "[7/7] summary: 1 task" in output and "recipes prepare RECIPE --stage cpt" in output
    removed = {Path(r["metadata"]["place"]).name: r for r in rows(out, "removed/*/*.jsonl.gz")}
    reasons = Counter((truth[place].kind, r["metadata"]["reason"]) for place, r in removed.items())
    planted = Counter(p.kind for p in truth.values())
    assert reasons[("exact", "exact")] == planted["exact"]  # every exact copy, some only equal once normalised
    assert reasons[("near", "near")] >= 0.9 * planted["near"]
    assert reasons[("short", "length")] == planted["short"]  # the registry's filter, run as a datatrove step
    assert reasons[("contaminated", "contaminated")] == 1  # the stage's built-in check (the eval set's paragraph)
    assert set(reasons) <= {("exact", "exact"), ("near", "near"), ("short", "length"),
                            ("contaminated", "contaminated")}  # no distinct document, no half copy
    for place, row in removed.items():  # a copy's detail names its original, as prepare's does
        detail = row["metadata"]["detail"]
        if row["metadata"]["reason"] == "near":
            similarity, original = detail.removeprefix("near duplicate (").split(") of ")
            assert 0.5 <= float(similarity) < 1 and Path(original).name == Path(truth[place].original).name
        elif row["metadata"]["reason"] == "exact":
            assert Path(detail.removeprefix("duplicate of ")).name == Path(truth[place].original).name, detail
    # the shards hold the rest, as read, one folder per source; the counts add up and match the files
    kept = rows(out, "shards/*/*.jsonl.gz")
    assert {Path(r["metadata"]["place"]).name for r in kept} == set(truth) - set(removed)
    report = json.loads((out / "removed.json").read_text(encoding="utf-8"))
    for name in ("zh", "en"):
        counts = report["sources"][name]
        mine = [r for r in removed.values() if r["metadata"]["source"] == name]
        reasons = Counter(r["metadata"]["reason"] for r in mine)
        assert {k: v["documents"] for k, v in counts["removed"].items()} == reasons
        assert counts["read"]["documents"] == counts["kept"]["documents"] + len(mine)
        assert counts["kept"]["documents"] == len(rows(out, f"shards/{name}/*.jsonl.gz"))
    original = {f"{path.name}:{number}": json.loads(line)["text"] for path in (out.parent / "data").glob("*.jsonl")
                for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)}
    assert all(r["text"] == original[Path(r["metadata"]["place"]).name] for r in kept)


def test_the_same_near_copies_as_the_builtin_path_and_prepare_reads_the_shards(cleaned):
    from recipes.cli import main as recipes

    out, truth, _ = cleaned
    recipe = out.parent / "recipe.toml"
    result = CliRunner().invoke(recipes, ["data", "inspect", str(recipe), "--json", "--removed", "-n", "50"])
    assert result.exit_code == 0, result.output
    builtin = json.loads(result.stdout)["stages"][0]
    ours = json.loads((out / "removed.json").read_text(encoding="utf-8"))["sources"]
    for name in ("zh", "en"):
        theirs = {reason: count["documents"] for reason, count in builtin["removed"][name].items()}
        mine = {reason: count["documents"] for reason, count in ours[name]["removed"].items()}
        for reason in ("exact", "length", "contaminated"):
            assert mine.get(reason) == theirs.get(reason), (name, reason, mine, theirs)
        assert abs(mine["near"] - theirs["near"]) <= max(1, 0.05 * theirs["near"]), (name, mine, theirs)
        near_places = {Path(r["metadata"]["place"]).name for r in rows(out, "removed/near/*.jsonl.gz")}
        examples = [Path(e["place"]).name for e in builtin["removed_examples"][name] if e["reason"] == "near"]
        assert examples and sum(place in near_places for place in examples) >= len(examples) - 1
    # the fragment: the same stage over the shards, which prepare tokenizes with nothing left to remove
    fragment = (out / "recipe-fragment.toml").read_text(encoding="utf-8")
    tables = tomllib.loads(fragment)["stages"]["data"]
    assert [(t["name"], t.get("weight")) for t in tables] == [("zh", 1.0), ("en", 2.0)]
    cleaned_recipe = out.parent / "cleaned.toml"
    head, evals = RECIPE.split("[[stages.data]]")[0], RECIPE[RECIPE.index("[[stages.eval_data]]"):]
    cleaned_recipe.write_text(f"{head}{fragment}\n{evals}", encoding="utf-8")
    result = CliRunner().invoke(recipes, ["data", "inspect", str(cleaned_recipe), "--json", "-n", "0"])
    assert result.exit_code == 0, result.output
    stage = json.loads(result.stdout)["stages"][0]
    assert not any(stage["removed"].values()), stage["removed"]
    assert stage["records"] == sum(ours[name]["kept"]["documents"] for name in ("zh", "en"))


def test_slurm_scripts_are_generated_and_their_pipelines_run_as_slurm_would_run_them(corpus, cleaned, tmp_path,
                                                                                      monkeypatch):
    import dill

    folder, _ = corpus
    out = tmp_path / "slurm"
    code, output = clean(str(folder / "recipe.toml"), "--stage", "cpt", "--out", str(out), "--executor", "slurm",
                         "--partition", "cpu", "--time", "2:00:00", "--tasks", "3", "--workers", "2",
                         "--sbatch-arg", "account=proj", "--dry-run")
    assert code == 0 and "nothing submitted" in output, output
    steps = ["clean", "exact-find", "exact-drop", "near-buckets", "near-clusters", "near-drop", "summary"]
    scripts = {}
    for path in (out / "slurm").glob("*.sbatch"):
        if not path.stem.endswith("-merge-stats"):  # datatrove's job adding each step's stats up
            text = path.read_text(encoding="utf-8")
            scripts[text.split("#SBATCH --job-name=recipes-")[1].split("\n")[0]] = text
    assert sorted(scripts) == sorted(steps)
    clean_job = scripts["clean"]
    assert clean_job.startswith("#!/bin/bash\n") and "#SBATCH --partition=cpu\n" in clean_job
    assert "#SBATCH --array=0-2%2\n" in clean_job and "#SBATCH --time=2:00:00\n" in clean_job
    assert "#SBATCH --account=proj\n" in clean_job and f"source {sys.prefix}/bin/activate" in clean_job
    assert f"launch_pickled_pipeline {out}/logs/1-clean/executor.pik" in clean_job
    assert "#SBATCH --array=0-0\n" in scripts["near-clusters"]  # one task joins the clusters
    for before, after in zip(steps, steps[1:]):  # each step's array waits for the one before to succeed
        job = scripts[before].split("(job id ")[1].split(" ")[0]
        assert f"--dependency=afterok:{job} " in scripts[after].splitlines()[1]
    # each job array's tasks, run in turn from its pickled executor as `launch_pickled_pipeline` runs them
    # on a node (SLURM_ARRAY_TASK_ID set; scontrol, which expands the node list, stands in for Slurm's)
    scontrol = tmp_path / "bin" / "scontrol"
    scontrol.parent.mkdir()
    scontrol.write_text("#!/bin/sh\necho localhost\n", encoding="utf-8")
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{scontrol.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_NODELIST", "localhost")
    for number, step in enumerate(steps, 1):
        with open(out / "logs" / f"{number}-{step}" / "executor.pik", "rb") as handle:
            executor = dill.load(handle)
        for task in range(executor.tasks):
            monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
            executor.run()
    local, _, _ = cleaned
    assert json.loads((out / "removed.json").read_text())["sources"] == \
        json.loads((local / "removed.json").read_text())["sources"]


def test_bad_input_is_one_line_with_exit_code_2(corpus, cleaned, tmp_path):
    folder, _ = corpus
    out, _, _ = cleaned
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text('{"text": "一段文字。"}\n{"text": \n', encoding="utf-8")
    recipe = tmp_path / "bad.toml"
    recipe.write_text(RECIPE.split("[[stages.data]]")[0] + '[[stages.data]]\npath = "data/a.jsonl"\nformat = "text"\n',
                      encoding="utf-8")
    code, output = clean(str(recipe), "--stage", "cpt", "--out", str(tmp_path / "o1"))
    last = output.splitlines()[-1]  # after the step it was in
    assert code == 2 and last.startswith("error: ") and "a.jsonl:2: not valid JSON" in last, output
    assert "Traceback" not in output and output.count("error") == 1, output
    recipe.write_text(recipe.read_text(encoding="utf-8").replace('kind = "pretrain"',
                                                                 'kind = "pretrain"\non_bad_record = "skip"\n'
                                                                 'max_bad_records = 1'), encoding="utf-8")
    code, output = clean(str(recipe), "--stage", "cpt", "--out", str(tmp_path / "o2"))
    assert code == 0, output
    report = json.loads((tmp_path / "o2" / "removed.json").read_text(encoding="utf-8"))
    assert report["bad_records"]["count"] == 1 and report["sources"]["a"]["kept"]["documents"] == 1
    # an output folder of another cleaning is refused, not mixed with it
    code, output = clean(str(folder / "recipe.toml"), "--stage", "cpt", "--out", str(out), "--tasks", "2")
    assert code == 2 and "it holds another cleaning" in output, output
    code, output = clean(str(folder / "recipe.toml"), "--stage", "sft", "--out", str(tmp_path / "o3"))
    assert code == 2 and "--stage sft: no such stage" in output, output
    (tmp_path / "data" / "chat.jsonl").write_text('{"messages": [{"role": "user", "content": "Q"}, '
                                                  '{"role": "assistant", "content": "A"}]}\n', encoding="utf-8")
    recipe.write_text(recipe.read_text(encoding="utf-8") + '\n[[stages]]\nname = "sft"\nkind = "sft"\n\n'
                      '[[stages.data]]\npath = "data/chat.jsonl"\nformat = "messages"\n', encoding="utf-8")
    code, output = clean(str(recipe), "--stage", "sft", "--out", str(tmp_path / "o5"))
    assert code == 2 and "trains on conversations; recipes-datatrove cleans pre-training documents" in output, output
    differing = folder / "differing.toml"
    differing.write_text(RECIPE.replace('weight = 2.0', 'weight = 2.0\nnear_threshold = 0.7'), encoding="utf-8")
    code, output = clean(str(differing), "--stage", "cpt", "--out", str(tmp_path / "o6"))
    assert code == 2 and "differ in near_threshold or their near_dedup table" in output, output
    assert not (tmp_path / "o6").exists()  # refused before anything was written
    code, output = clean(str(folder / "recipe.toml"), "--stage", "cpt", "--out", str(tmp_path / "o4"), "--dry-run")
    assert code == 2 and "add --executor slurm" in output, output


def test_near_dedup_settings_match_the_builtin_ones():
    from recipes_near_dedup.minhash import choose_bands
    from recipes_near_dedup.plugin import NearDedupOptions
    from recipes_near_dedup.minhash import shingles as builtin_shingles

    from recipes_datatrove.lsh import NearOptions, bands_for
    from recipes_datatrove.shingles import ScriptAwareTokenizer

    for threshold in (0.5, 0.7, 0.8, 0.9):
        assert bands_for(threshold) == choose_bands(threshold, 128)
    assert NearOptions().model_dump() == NearDedupOptions().model_dump()  # the same table, the same defaults
    words = ScriptAwareTokenizer().word_tokenize
    assert words("蜂王 负责产卵") == list("蜂王负责产卵")  # mostly CJK: characters, spaces dropped
    assert words("the queen bee lays eggs") == ["the", "queen", "bee", "lays", "eggs"]
    mixed = "bees 蜂王负责产卵 and the hive of the queen"  # 6 CJK of 28 non-space characters: words
    assert words(mixed) == mixed.split() and len(builtin_shingles(mixed)[0].split()) == 5
