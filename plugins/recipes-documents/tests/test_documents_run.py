"""End to end through the real CLI: a folder of HTML, DOCX, PDF and Markdown documents (a damaged PDF
and a picture among them) is the pre-training source of a recipe that `recipes run` trains on the tiny
model; the damaged PDF is skipped and counted by name, the picture never read."""

from __future__ import annotations

import json

from click.testing import CliRunner

from documents_support import caches, corpus  # noqa: F401 (caches: an autouse fixture)
from recipes.cli import main

RECIPE = """\
name = "regulations"
samples = []

[model]
path = "bundled:tiny-qwen2"

[[stages]]
name = "domain"
kind = "pretrain"
max_steps = 2
cutoff_len = 256  # the four documents in one block, to read them back whole
per_device_train_batch_size = 2
gradient_accumulation_steps = 1
logging_steps = 1
lora_rank = 4
lora_alpha = 8
on_bad_record = "skip"
max_bad_records = 1

[[stages.data]]
path = "regulations/"
format = "documents"
"""


def test_a_folder_of_documents_is_a_pretraining_source_that_trains(tmp_path):
    expected = corpus(tmp_path / "regulations")
    cut = tmp_path / "regulations" / "archive" / "old.pdf"
    cut.write_bytes((tmp_path / "regulations" / "archive" / "regulation.pdf").read_bytes()[:-40])
    (tmp_path / "regulations" / "scan.png").write_bytes(b"\x89PNG\r\n")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE, encoding="utf-8")

    result = CliRunner().invoke(main, ["run", str(recipe), "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    stage = json.loads((tmp_path / "run" / "stages" / "domain" / "stage.json").read_text())
    assert stage["steps"] == 2 and stage["first_loss"] > 0 and stage["tokens_seen"] > 0
    assert stage["data"]["records"] == len(expected) + 1 and stage["data"]["bad"] == 1  # the four, and the cut one
    assert stage["data"]["bad_first"][0].startswith(f"{cut}: a PDF cut short")

    shown = CliRunner().invoke(main, ["data", "inspect", str(recipe), "--json", "-n", "1"])
    assert shown.exit_code == 0, shown.output
    [inspected] = json.loads(shown.output)["stages"]
    assert inspected["cached"] and inspected["bad_records"] == 1
    [[block]] = inspected["examples"]
    order = ["regulation.pdf", "guide.html", "notes.md", "rules.docx"]  # the folder's files, sorted: archive/ first
    assert block["text"] == "".join(expected[name] + "<|endoftext|>" for name in order)
