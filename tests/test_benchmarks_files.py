"""Benchmarks before anything runs: the layouts read as they ship, `recipes validate` refusing what
cannot be scored (file:line, exit code 2, no torch), the fixed subset, and the statistics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write
from recipes.benchmarks.layouts import read_benchmark
from recipes.benchmarks.selection import choose, plan_benchmark
from recipes.benchmarks.statistics import mcnemar_exact, paired_change, wilson_interval
from recipes.config.schema import Benchmark
from recipes.errors import RecipeError

CEVAL_HEADER = "id,question,A,B,C,D,answer"


def ceval(root: Path, subject: str = "bees", dev: int = 5, val: int = 6, test_answers: bool = False) -> Path:
    write(root / "dev" / f"{subject}_dev.csv", CEVAL_HEADER + ",explanation\n"
          + "".join(f'{i},"dev q{i}, with a comma",a,b,c,d,{"ABCD"[i % 4]},why\n' for i in range(dev)))
    write(root / "val" / f"{subject}_val.csv", CEVAL_HEADER + "\n"
          + "".join(f"{i},val q{i},a,b,c,d,{'ABCD'[i % 4]}\n" for i in range(val)))
    write(root / "test" / f"{subject}_test.csv", CEVAL_HEADER + "\n"
          + "".join(f"{i},test q{i},a,b,c,d,{'A' if test_answers else ''}\n" for i in range(3)))
    return root


def mmlu(root: Path) -> Path:
    write(root / "data" / "dev" / "anatomy_dev.csv", "".join(f"dev q{i},a,b,c,d,B\n" for i in range(5)))
    write(root / "data" / "test" / "anatomy_test.csv", '"multi\nline q",a,b,c,d,C\nq2,a,b,c,d,D\n')
    return root


def cmmlu(root: Path) -> Path:
    write(root / "dev" / "agronomy.csv", ",Question,A,B,C,D,Answer\n" + "".join(f"{i},dq{i},a,b,c,d,A\n" for i in range(5)))
    write(root / "test" / "agronomy.csv", ",Question,A,B,C,D,Answer\n0,q0,a,b,c,d,D\n1,q1,a,b,c,d,B\n")
    return root


def test_each_layout_is_read_as_it_ships(tmp_path):
    read = read_benchmark(ceval(tmp_path / "ceval"))
    assert (read.layout, read.split) == ("ceval", "val")  # the default: C-Eval's test split has no answers
    bees = read.subjects["bees"]
    assert [i.answer for i in bees.items] == [0, 1, 2, 3, 0, 1] and len(bees.dev) == 5
    assert bees.dev[0].question == "dev q0, with a comma" and bees.items[0].where.endswith("bees_val.csv:2")
    read = read_benchmark(mmlu(tmp_path / "mmlu"))
    items = read.subjects["anatomy"].items
    assert (read.layout, read.split, [i.answer for i in items]) == ("mmlu", "test", [2, 3])
    assert items[0].question == "multi\nline q" and items[1].where.endswith("anatomy_test.csv:3")  # the row's first line
    read = read_benchmark(cmmlu(tmp_path / "cmmlu"))
    assert (read.layout, [i.answer for i in read.subjects["agronomy"].items]) == ("cmmlu", [3, 1])
    records = tmp_path / "records"
    write(records / "dev.jsonl", json.dumps({"question": "d", "choices": ["x", "y", "z"], "answer": 1}) + "\n")
    write(records / "test.jsonl", json.dumps({"question": "q", "choices": ["x", "y"], "answer": "B", "subject": "s"})
          + "\n" + json.dumps({"question": "q2", "choices": ["x", "y", "z"], "answer": 0}) + "\n")
    read = read_benchmark(records)
    assert read.layout == "records" and set(read.subjects) == {"s", "all"}
    assert read.subjects["s"].items[0].answer == 1 and read.subjects["all"].dev[0].choices == ("x", "y", "z")


def recipe(folder: Path, benchmarks: str) -> Path:
    write(folder / "corpus.jsonl", '{"text": "hello"}\n')
    return write(folder / "r.toml", 'name = "b"\n[model]\npath = "bundled:tiny-qwen2"\n' + benchmarks
                 + '[[stages]]\nname = "pt"\nkind = "pretrain"\n[[stages.data]]\npath = "corpus.jsonl"\nformat = "text"\n')


def validate(path: Path) -> subprocess.CompletedProcess:
    code = ("import sys; from recipes.cli import main\ntry:\n    main(['validate', sys.argv[1]])\n"
            "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules, 'transformers' in sys.modules)")
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)


def test_validate_refuses_what_cannot_be_scored_without_importing_torch(tmp_path):
    ceval(tmp_path / "exam", dev=2)  # 2 dev items: enough for shots = 2, not for the default 5
    bad_row = ceval(tmp_path / "bad", subject="x")
    write(bad_row / "val" / "x_val.csv", CEVAL_HEADER + "\n0,q,a,b,c,d,A\n1,q,a,b,c,E\n")
    table = '[[benchmarks]]\nname = "{}"\npath = "{}"\n{}\n'
    path = recipe(tmp_path, table.format("ok", "exam", "shots = 2")
                  + table.format("few_dev", "exam", "")
                  + table.format("no_answers", "exam", 'shots = 0\nsplit = "test"')
                  + table.format("missing", "nowhere", "")
                  + table.format("malformed", "bad", "")
                  + table.format("unknown", "exam", 'shots = 0\nsubjects = ["bess"]'))
    result = validate(path)
    assert result.stdout.split() == ["2", "False", "False"], result.stderr
    errors = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and len(errors) == 5, result.stderr
    assert "benchmarks[1].shots: subject 'bees' has 2 dev item(s), but shots = 5 needs" in errors[0]
    assert "bees_test.csv:2: split 'test' has no answers (C-Eval's test answers are not public" in errors[1]
    assert f"benchmarks[3].path: {tmp_path / 'nowhere'}: no such file or folder" in errors[2]
    assert f"benchmarks[4].path: {bad_row / 'val' / 'x_val.csv'}:3: 6 cells, expected 7" in errors[3]
    assert "benchmarks[5].subjects: 'bess' is not a subject" in errors[4] and 'did you mean "bees"' in errors[4]
    control = recipe(tmp_path, table.format("ok", "exam", "shots = 2"))  # the same folder, scorable: accepted
    accepted = validate(control)
    assert accepted.stdout.splitlines()[-1].split() == ["0", "False", "False"], accepted.stderr
    assert "benchmark ok: 6 questions in 1 subject(s) (ceval layout, split val), 2-shot" in accepted.stdout


def test_a_wrong_answer_letter_names_its_line(tmp_path):
    folder = ceval(tmp_path / "e")
    write(folder / "val" / "bees_val.csv", CEVAL_HEADER + "\n0,q,a,b,c,d,A\n1,q,a,b,c,d,E\n")
    with pytest.raises(RecipeError, match=r"bees_val.csv:3: the answer is 'E'; expected one of A, B, C, D"):
        read_benchmark(folder)


def test_the_subset_is_stratified_fixed_by_the_seed_and_stored(tmp_path):
    from recipes.benchmarks.selection import store_subset

    folder = ceval(tmp_path / "e", val=30)
    ceval(folder, subject="wasps", val=4)
    spec = Benchmark(name="e", path=str(folder), max_per_subject=5)
    first = choose(plan_benchmark(spec, tmp_path, seed=1))
    assert [i.subject for i in first.items].count("bees") == 5 and [i.subject for i in first.items].count("wasps") == 4
    assert [i.key for i in choose(plan_benchmark(spec, tmp_path, seed=1)).items] == [i.key for i in first.items]
    other = choose(plan_benchmark(spec, tmp_path, seed=2))
    assert [i.key for i in other.items] != [i.key for i in first.items] and other.digest != first.digest
    stored = json.loads(store_subset(tmp_path / "run", first).read_text())
    assert stored["items"] == [i.key for i in first.items] and stored["items_digest"] == first.digest
    assert stored["available"] == 34


def test_statistics():
    low, high = wilson_interval(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)  # Wilson's interval for 5 of 10
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)  # every discordant item one way
    assert mcnemar_exact(3, 3) == 1.0
    change = paired_change("0000011111", "1111111111")
    assert (change["points"], change["gained"], change["lost"], change["significant"]) == (50.0, 5, 0, False)
    change = paired_change("0" * 20, "1" * 20)
    assert change["p"] < 1e-5 and change["significant"]


def test_plan_estimates_the_scoring_and_counts_the_rows(tmp_path):
    from click.testing import CliRunner

    from recipes.cli import main

    ceval(tmp_path / "exam")
    text = recipe(tmp_path, '[[benchmarks]]\nname = "exam"\npath = "exam"\nchat = true\n').read_text()
    path = write(tmp_path / "two.toml", text + '[[stages]]\nname = "again"\nkind = "pretrain"\nbenchmarks = false\n'
                 '[[stages.data]]\npath = "corpus.jsonl"\nformat = "text"\n')
    estimates = {}
    for how in ([], ["--tokenize"]):
        result = CliRunner().invoke(main, ["plan", "--json", str(path), *how])
        assert result.exit_code == 0, result.output
        (estimates[bool(how)],) = json.loads(result.stdout)["benchmarks"]
    exact, guessed = estimates[True], estimates[False]
    assert exact["rows"] == 2  # the starting model and after "pt"; "again" skips the benchmarks
    assert exact["items"] == 6 and exact["chat"] and exact["memory_added"] > 0 and exact["seconds"] > 0
    assert abs(guessed["prompt_tokens_per_row"] / exact["prompt_tokens_per_row"] - 1) < 0.5
    off = write(tmp_path / "off.toml", "eval_matrix = false\n" + text)
    result = CliRunner().invoke(main, ["plan", "--json", str(off)])
    assert result.exit_code == 0 and json.loads(result.stdout)["benchmarks"] == []


def test_a_scorer_plugin_scores_into_the_same_rows(tmp_path):
    """The documented scorer example, registered as a plugin, scores a recipe's benchmark through the
    host (no model: it always picks the first choice) into a row the report reads."""
    from test_hook_docs import _example, _sections

    from recipes.benchmarks.evaluate import score_benchmarks
    from recipes.benchmarks.report import read_benchmarks
    from recipes.config.load import load_recipe
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry

    registry = get_registry(extra_plugins=(_example(_sections()["register_benchmark_scorers"]),))
    ceval(tmp_path / "exam", val=6)  # answers A B C D A B: a third are "A"
    path = recipe(tmp_path, '[[benchmarks]]\nname = "exam"\npath = "exam"\nscorer = "first_choice"\n')
    plan = make_plan(load_recipe(str(path), registry), registry, str(tmp_path / "run"))
    said = []
    rows = score_benchmarks(plan.benchmarks, None, None, said.append, "on the starting model", tmp_path / "run")
    assert rows["exam"]["accuracy"] == pytest.approx(2 / 6) and rows["exam"]["letters"]["A"] == 1.0
    assert len(said) == 1 and said[0].startswith("benchmark exam on the starting model (first_choice): accuracy 33.3% (95% CI")
    assert "answers A 100%" in said[0]
    report = read_benchmarks({"pt": {"benchmarks": {"start": rows, "after": rows}}})
    assert report[0]["rows"][1]["change"]["points"] == 0.0 and report[0]["rows"][0]["scorer"] == "first_choice"
    unknown = recipe(tmp_path, '[[benchmarks]]\nname = "exam"\npath = "exam"\nscorer = "first_choise"\n')
    with pytest.raises(RecipeError, match=r"benchmarks\[0\].scorer: unknown benchmark scorer 'first_choise'"):
        load_recipe(str(unknown), get_registry())
