"""Benchmarks in a real run on the tiny model: a C-Eval-layout folder and an MMLU-layout folder scored
on the starting model and after each stage, reported with accuracy, interval, item count, letter
shares and the paired change; a pre-training stage that teaches "the answer after the cue is always
this letter" moves the exam from near chance to near 100% (the evaluator measures the model)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from conftest import write
from recipes.benchmarks.layouts import LETTERS
from recipes.cli import main

SUBJECTS = ["hive", "colony"]


def exam(root: Path, letter: str) -> Path:
    """C-Eval layout, two subjects, every answer ``letter``."""
    header = "id,question,A,B,C,D,answer"
    for subject in SUBJECTS:
        write(root / "dev" / f"{subject}_dev.csv", header + ",explanation\n"
              + "".join(f"{i},{subject} worked example {i},w{i},x{i},y{i},z{i},{letter},\n" for i in range(2)))
        write(root / "val" / f"{subject}_val.csv", header + "\n"
              + "".join(f"{i},{subject} question number {i} about bees,r{i},s{i},t{i},u{i},{letter}\n" for i in range(10)))
    return root


def general(root: Path) -> Path:
    """MMLU layout (data/{dev,test}/, no header), answers of every letter."""
    write(root / "data" / "dev" / "general_dev.csv", "dev one,a,b,c,d,A\ndev two,a,b,c,d,B\n")
    write(root / "data" / "test" / "general_test.csv",
          "".join(f"general question {i},a{i},b{i},c{i},d{i},{'ABCD'[i % 4]}\n" for i in range(8)))
    return root


def least_chosen_letter(folder: Path, tiny_model) -> str:
    """The letter the starting model picks least on this exam: teaching it makes the move visible."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recipes.benchmarks.evaluate import score_benchmarks
    from recipes.benchmarks.selection import plan_benchmark
    from recipes.config.schema import Benchmark

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    plan = plan_benchmark(Benchmark(name="exam", path=str(folder), shots=1), folder, 42)
    scored = score_benchmarks([plan], model, AutoTokenizer.from_pretrained(tiny_model), lambda m: None, "probe")
    shares = scored["exam"]["letters"]
    return min(shares, key=shares.get)


def corpus(path: Path, letter: str) -> Path:
    """Text where the answer after the C-Eval prompt's cue is always ``letter``."""
    rows = [{"text": f"以下是中国关于bees考试的单项选择题，请选出其中的正确答案。\n\nquestion {i}\nA. a{i}\nB. b{i}\n"
                     f"C. c{i}\nD. d{i}\n答案：{letter}"} for i in range(48)]
    return write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def test_benchmarks_before_and_after_each_stage(tmp_path, tiny_model):
    folder = exam(tmp_path / "exam", "A")
    letter = least_chosen_letter(folder, tiny_model)
    exam(folder, letter)
    general(tmp_path / "general")
    corpus(tmp_path / "answers.jsonl", letter)
    write(tmp_path / "chat.jsonl", json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                            {"role": "assistant", "content": "hello"}]}) + "\n")
    recipe = write(tmp_path / "r.toml", f"""name = "bench"
[model]
path = "bundled:tiny-qwen2"
[[benchmarks]]
name = "exam"
path = "exam"
shots = 1
[[benchmarks]]
name = "general"
path = "general"
shots = 2
batch_size = 3
[defaults]
learning_rate = 1e-2
per_device_train_batch_size = 8
gradient_accumulation_steps = 1
cutoff_len = 64
warmup_ratio = 0.0
logging_steps = 5
[[stages]]
name = "pt"
kind = "pretrain"
max_steps = 8
[[stages.data]]
path = "answers.jsonl"
format = "text"
[[stages]]
name = "sft"
kind = "sft"
max_steps = 1
learning_rate = 1e-5
[[stages.data]]
path = "chat.jsonl"
format = "messages"
""")
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(recipe), "-o", str(run_dir)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = CliRunner().invoke(main, ["report", str(run_dir), "--json"])
    assert report.exit_code == 0, report.output
    benchmarks = {b["name"]: b for b in json.loads(report.output)["benchmarks"]}
    assert set(benchmarks) == {"exam", "general"}
    for name, items in (("exam", 20), ("general", 8)):
        rows = benchmarks[name]["rows"]
        assert [r["after"] for r in rows] == ["model", "pt", "sft"]
        assert benchmarks[name]["chance"] == 0.25
        for row in rows:
            assert row["items"] == items and row["low"] <= row["accuracy"] <= row["high"]
            assert set(row["letters"]) == set(LETTERS[:4]) and abs(sum(row["letters"].values()) - 1) < 1e-9
            assert "per_item" not in row
        assert [("change" in r) for r in rows] == [False, True, True]
        assert all(r["change"]["test"] == "McNemar exact" for r in rows[1:])
    exam_rows = benchmarks["exam"]["rows"]
    assert exam_rows[0]["accuracy"] <= 0.5, exam_rows[0]  # the starting model: its least chosen letter
    assert exam_rows[1]["accuracy"] >= 0.9 and exam_rows[1]["letters"][letter] >= 0.9, exam_rows[1]
    assert exam_rows[1]["change"]["significant"] and exam_rows[1]["change"]["points"] > 40
    assert set(exam_rows[0]["subjects"]) == set(SUBJECTS)
    # control: the same prompt on questions whose answers vary did not move with it
    assert benchmarks["general"]["rows"][1]["accuracy"] <= 0.5
    markdown = (run_dir / "report" / "report.md").read_text(encoding="utf-8")
    assert "## Benchmarks" in markdown and "### exam (chance 25.0%)" in markdown and "McNemar" in markdown
    assert (run_dir / "report" / "benchmarks.png").stat().st_size > 0
    stage = json.loads((run_dir / "stages" / "pt" / "stage.json").read_text(encoding="utf-8"))
    assert set(stage["benchmarks"]) == {"start", "after"} and len(stage["benchmarks"]["after"]["exam"]["per_item"]["correct"]) == 20
    stored = json.loads((run_dir / "benchmarks" / "exam.json").read_text(encoding="utf-8"))
    assert stored["items_digest"] == exam_rows[0]["items_digest"] and len(stored["items"]) == 20
    log = (run_dir / "run.log").read_text(encoding="utf-8")
    assert "benchmark exam on the starting model: accuracy" in log
    assert "benchmark exam after pt: accuracy" in log and "change from the starting model: +" in log
    assert "benchmark general after sft: accuracy" in log and "change from after pt:" in log


def test_the_demos_report_their_exam_under_lora_and_qlora(demo_run, demo_qlora_run):
    for run_dir, _ in (demo_run, demo_qlora_run):
        report = json.loads((run_dir / "report" / "report.json").read_text(encoding="utf-8"))
        (exam,) = report["benchmarks"]
        assert exam["name"] == "beekeeping_exam"
        assert [r["after"] for r in exam["rows"]] == ["model", "domain", "sft"]
        assert all(r["items"] == 20 and set(r["subjects"]) == {"beekeeping", "general"} for r in exam["rows"])
        assert all(r["change"]["items"] == 20 for r in exam["rows"][1:])


def test_a_finished_run_says_when_its_benchmark_rows_are_not_the_recipes(demo_run, tmp_path):
    import shutil

    from qwen_recipes import bundled_recipes

    copy = tmp_path / "run"
    shutil.copytree(demo_run[0], copy)
    text = bundled_recipes()["demo"].read_text(encoding="utf-8")
    note = "note: the benchmark rows stored for 'domain' are not the recipe's benchmarks (changed since"
    same = CliRunner().invoke(main, ["run", str(write(tmp_path / "same" / "demo.toml", text)), "-o", str(copy)])
    assert same.exit_code == 0 and "skipped" in same.output and "note:" not in same.output, same.output
    changed = write(tmp_path / "changed" / "demo.toml", text.replace("shots = 2", "shots = 1"))
    result = CliRunner().invoke(main, ["run", str(changed), "-o", str(copy)])
    assert result.exit_code == 0 and "skipped" in result.output, result.output
    said = " ".join(result.output.split())  # the console wraps long lines
    assert note in said and "`recipes run --restart domain` scores them" in said
