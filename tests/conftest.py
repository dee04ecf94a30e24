"""Shared fixtures: no network, a private cache, the genuine Qwen tokenizer and one demo run per session."""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist each worker is one of several processes on the machine's cores: torch's default
# of a thread per core would put workers x cores threads on them, whose waiting for each other (OpenMP
# spins) costs CPU time and slows every worker. Each worker gets its share of the cores (the runs a
# test starts in a subprocess inherit it); set before anything imports torch.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    share = (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, share)))


def workers_folder(tmp_path_factory) -> Path | None:
    """The folder that the session's pytest-xdist workers have in common (None without xdist)."""
    return tmp_path_factory.getbasetemp().parent if os.environ.get("PYTEST_XDIST_WORKER") else None


@pytest.fixture(scope="session", autouse=True)
def private_caches(tmp_path_factory):
    """Nothing reads or writes the user's caches; the tiny model is built once, here. Under
    pytest-xdist the session's workers share one ``$RECIPES_CACHE`` (as the processes of a run share
    one: the tiny model, token stores and layouts are built under locks or renamed into place), so
    that the shared demo run's model and stores are every worker's; tests that need an empty cache
    set their own."""
    root = tmp_path_factory.mktemp("caches")
    os.environ["HF_HOME"] = str(root / "hf")
    shared = workers_folder(tmp_path_factory)
    os.environ["RECIPES_CACHE"] = str((shared / "caches" if shared else root) / "recipes")
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
    """Run a bundled recipe once through the real CLI entry point; (run folder, output).

    Under pytest-xdist (the suite runs one worker per core) the workers share one run: the first
    to need it trains it under a lock in the session's common temporary folder, the others wait
    for it and read the same folder (the tests copy it before changing anything)."""
    from click.testing import CliRunner

    from recipes.cli import main

    shared = workers_folder(tmp_path_factory)
    root = shared / f"shared-{name}" if shared else tmp_path_factory.mktemp(name)
    root.mkdir(exist_ok=True)
    run_dir, said = root / "run", root / "output.txt"
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if not said.is_file():
            result = CliRunner().invoke(main, ["run", name, "--output-dir", str(run_dir)])
            assert result.exit_code == 0, result.output + repr(result.exception)
            said.write_text(result.output, encoding="utf-8")
    return run_dir, said.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, tiny_model):
    """The bundled demo recipe, run once through the real CLI entry point."""
    return run_bundled(tmp_path_factory, "demo")


@pytest.fixture(scope="session")
def demo_qlora_run(tmp_path_factory, tiny_model):
    """The bundled demo_qlora recipe, as shipped, run once through the real CLI entry point."""
    return run_bundled(tmp_path_factory, "demo_qlora")


def without_benchmarks_and_samples(text: str) -> str:
    """A recipe's text without its ``[[benchmarks]]`` tables and its samples: for a test about something
    else, where scoring an exam and writing answers after every stage would only cost time."""
    text, left_out = re.subn(r"^\[\[benchmarks\]\]\n(?:[^\[\n].*\n|\n)*|^samples.*\n", "", text, flags=re.M)
    assert left_out, "no benchmarks or samples to leave out"
    return text


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

