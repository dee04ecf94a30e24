"""The JSON a program reads from `recipes validate`, `recipes plan` and `recipes report` (docs/SKILL.md
documents these shapes): the keys are there with the documented types, bad input with `--json` is a
JSON document with located errors and exit code 2, and validate's and plan's JSON, good or bad,
import neither torch nor transformers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from recipes.cli import main

BAD = """name = "bad"
[model]
path = "bundled:tiny-qwen2"
[[stages]]
name = "a"
kind = "sft"
lora_rnak = 8
[[stages.data]]
path = "bundled:instructions.jsonl"
format = "messages"
"""
PROBLEM_KEYS = {"file", "line", "column", "field", "message"}


def run_json(args: list[str]) -> tuple[int, dict]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, json.loads(result.stdout)


def test_validate_json_shape(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD)
    code, document = run_json(["validate", "--json", "demo", str(bad)])
    assert code == 2 and document["ok"] is False and set(document) == {"ok", "recipes"}
    good, wrong = document["recipes"]
    assert set(good) == set(wrong) == {"recipe", "ok", "errors", "warnings", "plan"}
    assert good["ok"] is True and good["errors"] == [] and isinstance(good["warnings"], list)
    plan = good["plan"]
    assert {"name", "model", "quantization", "stages"} <= set(plan)
    assert {"path", "model_type", "context", "config"} <= set(plan["model"])
    stage = plan["stages"][0]
    assert {"name", "kind", "base", "effective_batch", "learning_rate", "cutoff_len", "num_train_epochs",
            "max_steps", "lora_rank", "lora_alpha", "data"} <= set(stage)
    assert {"name", "path", "format", "files", "records", "weight", "share"} <= set(stage["data"][0])
    assert wrong["ok"] is False and wrong["plan"] is None
    [error] = wrong["errors"]
    assert set(error) == PROBLEM_KEYS
    assert (error["file"], error["line"], error["column"], error["field"]) == (str(bad), 7, 1, "stages[0].lora_rnak")
    assert "lora_rank" in error["message"]


def test_plan_json_shape_and_its_errors_as_json(tmp_path):
    code, document = run_json(["plan", "demo", "--device", "cpu", "--json"])
    assert code == 0
    assert {"name", "model", "quantization", "device", "distributed", "tokens_from", "stages"} <= set(document)
    assert {"path", "model_type", "total_parameters", "layers", "hidden", "vocab"} <= set(document["model"])
    assert [s["name"] for s in document["stages"]] == ["domain", "sft"]
    for stage in document["stages"]:
        assert {"name", "kind", "base", "parameters", "memory", "data"} <= set(stage)
        assert {"total", "trainable", "trainable_share", "lora_modules"} <= set(stage["parameters"])
        memory = stage["memory"]
        assert {"weights", "gradients", "optimizer", "activations", "logits_and_loss", "overhead", "peak"} <= set(memory)
        assert isinstance(memory["peak"], int) and memory["peak"] >= memory["weights"] > 0
        assert {"records", "tokens_per_epoch", "sequences", "optimizer_steps", "warmup_steps", "exact",
                "sources"} <= set(stage["data"])
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD)
    code, document = run_json(["plan", str(bad), "--json"])
    assert code == 2 and document["ok"] is False
    [error] = document["errors"]
    assert set(error) == PROBLEM_KEYS and error["field"] == "stages[0].lora_rnak" and error["line"] == 7


def test_report_json_shape_and_its_errors_as_json(demo_run, tmp_path):
    run_dir, _ = demo_run
    copy = tmp_path / "run"  # report writes RUN/report/: never into the shared run
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("merged", "adapter", "report", "checkpoints"))
    code, document = run_json(["report", str(copy), "--json"])
    assert code == 0
    assert {"run_dir", "stages", "samples", "eval_matrix", "mix", "curves"} <= set(document)
    assert [row["stage"] for row in document["stages"]] == ["domain", "sft"]
    for row in document["stages"]:
        assert {"stage", "kind", "status", "steps", "tokens", "wall_seconds", "tokens_per_second", "first_loss",
                "final_loss", "eval_loss_before", "eval_loss_after", "eval_perplexity_before",
                "eval_perplexity_after", "peak_memory_bytes"} <= set(row)
        assert row["status"] == "done" and row["steps"] > 0 and row["final_loss"] < row["first_loss"]
    assert document == json.loads((copy / "report" / "report.json").read_text())
    code, document = run_json(["report", str(tmp_path / "no-run"), "--json"])
    assert code == 2 and document["ok"] is False and "not a run folder" in document["errors"][0]["message"]


def test_json_documents_good_or_bad_import_neither_torch_nor_transformers(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD)
    code = ("import sys, io, contextlib; from recipes.cli import main\n"
            "codes = []\n"
            "for args in (['validate', '--json', 'demo', sys.argv[1]], ['plan', '--json', sys.argv[1]]):\n"
            "    out = io.StringIO()\n"
            "    with contextlib.redirect_stdout(out):\n"
            "        try:\n            main(args)\n        except SystemExit as e:\n            codes.append(e.code)\n"
            "    assert '\"ok\": false' in out.getvalue(), out.getvalue()\n"
            "print(codes, [m for m in ('torch', 'transformers') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True,
                            cwd=Path(__file__).parent)
    assert result.stdout.strip() == "[2, 2] []", result.stdout + result.stderr
