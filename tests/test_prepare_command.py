"""`recipes prepare` through the real CLI into a token store of its own: --stage, --workers and
$RECIPES_DATA_WORKERS, .bz2 and .xz inputs giving the plain file's tokens, the bytes a token takes on
disk, bad records listed at their first five places, and what the store key covers."""

from __future__ import annotations

import bz2
import json
import lzma
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import write
from recipes.cli import main

RECIPE = """
[model]
path = "bundled:tiny-qwen2"
[defaults]
cutoff_len = 64
[[stages]]
name = "plain"
kind = "pretrain"
[[stages.data]]
path = "corpus.jsonl"
format = "text"
[[stages]]
name = "bzipped"
kind = "pretrain"
[[stages.data]]
path = "corpus.jsonl.bz2"
format = "text"
[[stages]]
name = "xzipped"
kind = "pretrain"
[[stages.data]]
path = "corpus.jsonl.xz"
format = "text"
[[stages]]
name = "chat"
kind = "sft"
base = "plain"
on_bad_record = "skip"
max_bad_records = 10
[[stages.data]]
path = "chat.jsonl"
format = "messages"
"""
BAD_LINES = (3, 6, 9, 12, 15, 18, 21)  # seven bad records: more than the five places listed


@pytest.fixture
def recipe(tmp_path, tiny_model, monkeypatch):
    """The recipe and its files, and a token store of this test's own (only the tiny model in it)."""
    corpus = "".join(json.dumps({"text": f"Bees make honey from nectar, batch {i}. " * 6}) + "\n" for i in range(20))
    write(tmp_path / "corpus.jsonl", corpus)
    (tmp_path / "corpus.jsonl.bz2").write_bytes(bz2.compress(corpus.encode()))
    (tmp_path / "corpus.jsonl.xz").write_bytes(lzma.compress(corpus.encode()))
    lines = []
    for line in range(1, 41):
        lines.append("{not json" if line in BAD_LINES else json.dumps({"messages": [
            {"role": "user", "content": f"Question {line} about bees?"},
            {"role": "assistant", "content": f"Answer {line}: bees make honey."}]}))
    write(tmp_path / "chat.jsonl", "\n".join(lines) + "\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / tiny_model.name).symlink_to(tiny_model)
    monkeypatch.setenv("RECIPES_CACHE", str(cache))
    return write(tmp_path / "r.toml", RECIPE), cache


def prepare(*args, code=0) -> str:
    result = CliRunner().invoke(main, ["prepare", *map(str, args)])
    assert result.exit_code == code, result.output + repr(result.exception)
    return result.output


def stores(cache: Path) -> dict[str, dict]:
    return {folder.name: json.loads((folder / "store.json").read_text())
            for folder in (cache / "store").iterdir() if (folder / "store.json").is_file()}


def test_prepare_one_stage_then_all_of_them(recipe, monkeypatch):
    from recipes.data import build

    path, cache = recipe
    monkeypatch.setattr(build, "CHUNK_RECORDS", 8)  # several shards from 40 records: workers are used
    output = prepare(path, "--stage", "chat", "--workers", "2")
    assert "stage chat (sft)" in output and "prepared into the store" in output
    assert "stage plain" not in output
    [(key, chat)] = stores(cache).items()  # only the stage asked for
    assert chat["workers"] == 2 and len(chat["shards"]) == 5
    # the bad records: counted, and the first five places listed
    assert chat["bad"] == len(BAD_LINES) and "7 bad records skipped" in output
    assert [place.split(":")[1] for place in chat["bad_first"]] == [str(n) for n in BAD_LINES[:5]], chat["bad_first"]

    output = prepare(path)
    assert output.count("prepared into the store") == 3 and output.count("from the prepared store") == 1
    built = stores(cache)
    assert len(built) == 4
    # .bz2 and .xz give the plain file's tokens
    tokens = {}
    for folder in (cache / "store").iterdir():
        if (folder / "store.json").is_file() and built[folder.name]["kind"] == "documents":
            tokens[folder.name] = np.concatenate([np.load(f) for f in sorted(folder.glob("shard-*.ids.npy"))])
    assert len(tokens) == 3
    first, *others = tokens.values()
    assert len(first) > 500 and all(np.array_equal(first, other) for other in others)


def test_the_data_workers_variable_sets_the_processes(recipe, monkeypatch):
    from recipes.data import build

    path, cache = recipe
    monkeypatch.setattr(build, "CHUNK_RECORDS", 8)
    monkeypatch.setenv("RECIPES_DATA_WORKERS", "3")
    prepare(path, "--stage", "chat")
    [chat] = stores(cache).values()
    assert chat["workers"] == 3


def test_a_token_takes_4_bytes_and_an_sft_token_4_and_one_eighth(recipe):
    path, cache = recipe
    prepare(path, "--stage", "plain")
    prepare(path, "--stage", "chat")
    for folder in (cache / "store").iterdir():
        if not (folder / "store.json").is_file():
            continue
        info = json.loads((folder / "store.json").read_text())
        data = {kind: sum(np.load(f, mmap_mode="r").nbytes for f in folder.glob(f"shard-*.{kind}.npy"))
                for kind in ("ids", "lengths", "mask")}
        on_disk = {kind: sum(f.stat().st_size for f in folder.glob(f"shard-*.{kind}.npy")) for kind in data}
        shards = len(info["shards"])
        assert all(0 <= on_disk[k] - data[k] <= 128 * shards for k in data)  # the .npy headers, no more
        assert data["ids"] == 4 * info["tokens"] and data["lengths"] == 4 * info["examples"]
        if info["kind"] == "documents":
            assert data["mask"] == 0
        else:  # one bit a token, rounded up to a byte per shard
            assert info["tokens"] / 8 <= data["mask"] <= info["tokens"] / 8 + shards


def test_the_store_key_covers_what_decides_the_tokens(recipe, monkeypatch):
    from importlib import metadata

    from recipes.config.load import load_recipe
    from recipes.data.prepare import store_key
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry

    path, _ = recipe
    registry = get_registry()

    def key(stage: str, edit=("", ""), source=None) -> str:
        write(path.parent / "k.toml", RECIPE.replace(*edit) if edit[0] else RECIPE)
        plan = make_plan(load_recipe(str(path.parent / "k.toml"), registry), registry)
        s = next(st for st in plan.stages if st.name == stage)
        kind = "documents" if s.kind == "pretrain" else "conversations"
        return store_key(source or s.sources, kind, "tokenizer", s.settings)

    chat, plain = key("chat"), key("plain")
    sft_line = 'base = "plain"\n'
    for edit in ((sft_line, sft_line + "cutoff_len = 128\n"), (sft_line, sft_line + 'overlong_examples = "drop"\n'),
                 ('on_bad_record = "skip"', 'on_bad_record = "error"'), ("max_bad_records = 10", "max_bad_records = 20")):
        assert key("chat", edit) != chat, edit
    assert key("chat", ('format = "messages"', 'format = "messages"\noptions = { mask_history = true }')) != chat
    # a pre-training store does not depend on the SFT cut-off (blocks are cut when a stage reads it)
    assert key("plain", ("cutoff_len = 64", "cutoff_len = 128")) == plain
    assert key("plain", ('path = "corpus.jsonl"\nformat = "text"',
                         'path = "corpus.jsonl"\nformat = "text"\noptions = { split = "file" }')) != plain

    # the version of the plugin that provides a format
    write(path.parent / "dolly.jsonl", json.dumps({"instruction": "Who makes honey?", "context": "", "response": "Bees."}) + "\n")
    dolly = [(registry.formats["dolly"], registry.formats["dolly"].options_model(), [str(path.parent / "dolly.jsonl")])]
    before = key("chat", source=dolly)
    real_version = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "9.9.9" if name == "recipes-dolly-format" else real_version(name))
    assert key("chat", source=dolly) != before
