"""Shared fixtures: no network, a private cache, the genuine Qwen tokenizer and one demo run per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items):
    """Under pytest-xdist (the suite runs one worker per core, ``--dist loadgroup``) a group runs on
    one worker: the tests of one session-scoped demo run share a group, so that each demo trains
    once, not once per worker; every other test is grouped with its module, whose module-scoped
    fixtures then run once too."""
    for item in items:
        group = next((f for f in ("demo_run", "demo_qlora_run") if f in getattr(item, "fixturenames", ())),
                     item.nodeid.split("::")[0])
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session", autouse=True)
def private_caches(tmp_path_factory):
    """Nothing reads or writes the user's caches; the tiny model is built once, here."""
    root = tmp_path_factory.mktemp("caches")
    os.environ["HF_HOME"] = str(root / "hf")
    os.environ["RECIPES_CACHE"] = str(root / "recipes")
    yield root


@pytest.fixture(scope="session")
def tiny_model(private_caches) -> Path:
    from qwen_recipes.tiny import tiny_qwen2_path

    return tiny_qwen2_path()


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def run_bundled(tmp_path_factory, name: str):
    """Run a bundled recipe once through the real CLI entry point; (run folder, output)."""
    from click.testing import CliRunner

    from recipes.cli import main

    run_dir = tmp_path_factory.mktemp(name) / "run"
    result = CliRunner().invoke(main, ["run", name, "--output-dir", str(run_dir)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return run_dir, result.output


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, tiny_model):
    """The bundled demo recipe, run once through the real CLI entry point."""
    return run_bundled(tmp_path_factory, "demo")


@pytest.fixture(scope="session")
def demo_qlora_run(tmp_path_factory, tiny_model):
    """The bundled demo_qlora recipe, as shipped, run once through the real CLI entry point."""
    return run_bundled(tmp_path_factory, "demo_qlora")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# A good two-stage recipe on the tiny model; the validation tests edit it into wrong ones.
GOOD_RECIPE = """\
name = "t"
[model]
path = "bundled:tiny-qwen2"

[[stages]]
name = "domain"
kind = "pretrain"

[[stages.data]]
path = "corpus.jsonl"
format = "text"

[[stages]]
name = "sft"
kind = "sft"

[[stages.data]]
path = "chat.jsonl"
format = "messages"
"""

