"""The token store (issue 14): streamed, compressed and parallel preparation gives exactly the tokens
and labels of the in-memory functions (`pretrain_examples`, `sft_examples`, `split`, `pack_examples`);
an interrupted preparation keeps its shards; two gloo processes read disjoint shares; bad records are
skipped and counted; nothing in the cache is a pickle."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zstandard

from conftest import write
from recipes.config.load import load_recipe
from recipes.data import build, records, streams
from recipes.data.layout import pack_lengths
from recipes.data.packing import pack_examples
from recipes.data.prepare import prepare, split, store_root
from recipes.data.tokenization import DataStats, pretrain_examples, read_records, sft_examples
from recipes.errors import RecipeError
from recipes.planning.plan import make_plan
from recipes.plugins.registry import get_registry

BUNDLED = Path(__file__).resolve().parents[1] / "qwen_recipes" / "data"


def _plan(recipe: str):
    registry = get_registry()
    return make_plan(load_recipe(recipe, registry), registry)


def _recipe(tmp_path, kind: str, path: str, fmt: str, extra: str = "", cutoff: int = 64) -> str:
    return str(write(tmp_path / f"{kind}.toml", f'[model]\npath = "bundled:tiny-qwen2"\n[[stages]]\nname = "s"\n'
                     f'kind = "{kind}"\ncutoff_len = {cutoff}\n{extra}[[stages.data]]\npath = "{path}"\n'
                     f'format = "{fmt}"\n'))


def _old(stage, tokenizer):
    """What the pre-store code trains on: the in-memory functions, split, packed."""
    s = stage.settings
    stats = DataStats()
    if stage.kind == "pretrain":
        examples = pretrain_examples(read_records(stage.sources), tokenizer, s.cutoff_len, stats)
    else:
        examples = sft_examples(read_records(stage.sources), tokenizer, s.cutoff_len, stats, s.overlong_examples)
    train, val = split(examples, s.val_size, s.seed, stage.name) if s.val_size else (examples, [])
    if s.packing:
        train, val = pack_examples(train, s.cutoff_len)[0], (pack_examples(val, s.cutoff_len)[0] if val else [])
    return train, val, stats


def _rows(dataset) -> list[dict]:
    return [dataset[i] for i in range(len(dataset))]


def test_the_store_gives_the_tokens_and_labels_of_the_in_memory_path_on_the_bundled_data(tokenizer, monkeypatch,
                                                                                         tmp_path):
    monkeypatch.setenv("RECIPES_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "CHUNK_CHARACTERS", 3000)  # many shards: blocks cross shard edges
    monkeypatch.setattr(build, "CHUNK_RECORDS", 7)
    said = []
    corpus = _recipe(tmp_path, "pretrain", str(BUNDLED / "domain_corpus.jsonl"), "text", "val_size = 0.1\n", cutoff=256)
    for stage in (_plan(corpus).stages[0], _plan("demo").stages[1]):  # pre-training (val_size), SFT (and packing)
        train, val, stats = _old(stage, tokenizer)
        data = prepare(stage, tokenizer, said.append, workers=2)
        assert len(data.store.info["shards"]) > 3
        assert _rows(data.train) == train and _rows(data.evals["val"]) == val
        assert (data.stats.records, data.stats.examples, data.stats.tokens, data.stats.label_tokens) == (
            stats.records, stats.examples, stats.tokens, stats.label_tokens)
    assert any("2 processes" in line for line in said)
    assert sum(line.startswith("data: prepared into the store") for line in said) == 2
    again = []
    data = prepare(_plan("demo").stages[1], tokenizer, again.append)
    # (a line on what decontamination compares against may come first)
    assert data.cached and [line for line in again if line.startswith("data: ")][-1].startswith(
        "data: from the prepared store")
    assert not any(line.startswith("data: prepared into the store") for line in again)
    # the demo's first stage mixes two sources: each source's store holds that source's blocks, as the
    # in-memory path cuts them from it alone
    mixed = _plan("demo").stages[0]
    data = prepare(mixed, tokenizer, lambda m: None)
    assert len(data.stores) == len(mixed.sources) == 2
    for store, source in zip(data.stores, mixed.sources):
        blocks = pretrain_examples(read_records([source]), tokenizer, mixed.settings.cutoff_len, DataStats())
        assert [{"input_ids": a.tolist(), "labels": b.tolist()} for a, b in map(store.example, range(len(store)))] == blocks


def test_truncation_and_drop_match_sft_examples(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("RECIPES_CACHE", str(tmp_path / "cache"))
    for overlong in ("truncate", "drop"):
        path = _recipe(tmp_path, "sft", str(BUNDLED / "instructions.jsonl"), "messages",
                       f'overlong_examples = "{overlong}"\npacking = false\n', cutoff=100)
        [stage] = _plan(path).stages
        train, _, stats = _old(stage, tokenizer)
        data = prepare(stage, tokenizer, lambda m: None, workers=1)
        assert _rows(data.train) == train
        assert (data.stats.truncated, data.stats.dropped) == (stats.truncated, stats.dropped) != (0, 0)


def test_a_file_larger_than_the_reader_buffer_is_streamed(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "BUFFER", 4096)  # the JSON array reader's refill size
    monkeypatch.setattr(streams, "BUFFER", 4096)  # bytes read from disk at a time
    rows = [{"text": f"document {i} " + "x" * (i % 300), "n": i} for i in range(3000)]
    array = write(tmp_path / "big.json", json.dumps(rows, indent=1))
    lines = write(tmp_path / "big.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    for path in (array, lines):
        assert path.stat().st_size > 100 * 4096
        start = streams.ByteCounter.total
        reader = records.read_table(path)
        where, first = next(reader)
        assert first == rows[0] and where in (f"{path}[0]", f"{path}:1")
        assert streams.ByteCounter.total - start < 5 * 4096  # one record read: a few buffers, not the file
        assert [r for _, r in reader] == rows[1:]


def test_compressed_files_bom_and_crlf_read_like_plain_ones(tmp_path):
    from recipes.builtin.text import TextOptions, read_text

    rows = [{"text": f"line {i} 蜂蜜"} for i in range(50)]
    body = "".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows).encode("utf-8")
    write(tmp_path / "a.jsonl", "")
    (tmp_path / "a.jsonl").write_bytes(b"\xef\xbb\xbf" + body)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(body))
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(body))
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(b"\xef\xbb\xbfone\r\n\r\ntwo\r\n"))
    for name in ("a.jsonl", "a.jsonl.gz", "a.jsonl.zst"):
        got = list(read_text(tmp_path / name, TextOptions()))
        assert [g["text"] for g in got] == [r["text"] for r in rows]
        assert got[3]["_where"] == f"{tmp_path / name}:4"
    assert [d["text"] for d in read_text(tmp_path / "a.txt.gz", TextOptions())] == ["one", "two"]


def test_gzip_corpus_prepares_the_same_tokens(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("RECIPES_CACHE", str(tmp_path / "cache"))
    plain = BUNDLED / "domain_corpus.jsonl"
    (tmp_path / "corpus.jsonl.gz").write_bytes(gzip.compress(plain.read_bytes()))
    out = []
    for path in (str(plain), str(tmp_path / "corpus.jsonl.gz")):
        [stage] = _plan(_recipe(tmp_path, "pretrain", path, "text")).stages
        out.append(_rows(prepare(stage, tokenizer, lambda m: None).train))
    assert out[0] == out[1] and len(out[0]) > 10


def test_an_empty_file_or_one_without_records_is_an_error_naming_it(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("RECIPES_CACHE", str(tmp_path / "cache"))
    for name, text in (("empty.jsonl", ""), ("blank.jsonl", "\n\n  \n")):
        write(tmp_path / name, text)
        [stage] = _plan(_recipe(tmp_path, "pretrain", str(tmp_path / name), "text")).stages
        with pytest.raises(RecipeError, match=rf"{name}: no records in this file"):
            prepare(stage, tokenizer, lambda m: None)


def test_an_interrupted_preparation_keeps_its_shards_and_resumes(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("RECIPES_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "CHUNK_CHARACTERS", 2000)
    [stage] = _plan(_recipe(tmp_path, "pretrain", str(BUNDLED / "domain_corpus.jsonl"), "text")).stages
    expected = _old(stage, tokenizer)[0]

    from recipes.data.progress import Progress

    class Stop(Exception):
        pass

    advance = Progress.advance
    seen = []

    def stop_after_three(self, records_done, tokens):
        advance(self, records_done, tokens)
        seen.append(records_done)
        if len(seen) == 3:
            raise Stop  # as a Ctrl-C or a kill between shards would

    monkeypatch.setattr(Progress, "advance", stop_after_three)
    with pytest.raises(Stop):
        prepare(stage, tokenizer, lambda m: None, workers=1)
    [folder] = [p for p in store_root().iterdir() if p.is_dir()]
    assert len(list(folder.glob("shard-*.json"))) == 3 and not (folder / "store.json").exists()
    monkeypatch.setattr(Progress, "advance", advance)
    said = []
    data = prepare(stage, tokenizer, said.append, workers=1)
    assert data.store.info["reused_shards"] == 3 and "3 shards kept from an interrupted preparation" in said[0]
    assert _rows(data.train) == expected


BAD = [
    {"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]},
    "{not json",
    {"messages": [{"role": "user", "content": "Q2"}]},  # nothing to learn
    {"conversation": []},  # no messages column
    {"messages": [{"role": "user", "content": "Q3"}, {"role": "assistant", "content": "A3"}]},
]


def _bad_file(tmp_path) -> Path:
    return write(tmp_path / "chat.jsonl", "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in BAD))


def test_bad_records_are_an_error_by_default_naming_file_and_line(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("RECIPES_CACHE", str(tmp_path / "cache"))
    path = _bad_file(tmp_path)
    [stage] = _plan(_recipe(tmp_path, "sft", str(path), "messages")).stages
    with pytest.raises(RecipeError, match=rf"{path}:2: not valid JSON"):
        prepare(stage, tokenizer, lambda m: None)


def test_bad_records_skipped_and_counted_up_to_the_limit(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("RECIPES_CACHE", str(tmp_path / "cache"))
    path = _bad_file(tmp_path)
    recipe = _recipe(tmp_path, "sft", str(path), "messages", 'on_bad_record = "skip"\nmax_bad_records = 3\n'
                     'packing = false\n')
    [stage] = _plan(recipe).stages
    data = prepare(stage, tokenizer, lambda m: None)
    assert (data.stats.bad, data.stats.records, len(data.train)) == (3, 5, 2)
    # read errors as they are read, then the conversation the tokenizer rejects
    assert [p.split(": ")[0] for p in data.stats.bad_first] == [f"{path}:2", f"{path}:4", f"{path}:3"]
    assert any("3 bad records skipped" in note for note in data.stats.notes)

    from recipes.data.inspect import inspect_stage

    report = inspect_stage(stage, tokenizer, 1)
    assert report["bad_records"] == 3 and report["cached"]

    [strict] = _plan(_recipe(tmp_path, "sft", str(path), "messages", 'on_bad_record = "skip"\nmax_bad_records = 2\n'
                             'packing = false\n')).stages
    with pytest.raises(RecipeError, match="more than max_bad_records = 2"):
        prepare(strict, tokenizer, lambda m: None)
    [share] = _plan(_recipe(tmp_path, "sft", str(path), "messages", 'on_bad_record = "skip"\nmax_bad_records = 0.5\n'
                            'packing = false\n')).stages
    with pytest.raises(RecipeError, match=r"3 of 5 records are bad \(60.0%\)"):
        prepare(share, tokenizer, lambda m: None)


def test_no_pickle_in_the_cache(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("RECIPES_CACHE", str(tmp_path / "cache"))
    for stage in _plan("demo").stages:
        prepare(stage, tokenizer, lambda m: None)
    files = [p for p in (tmp_path / "cache" / "store").rglob("*") if p.is_file()]
    assert files and not [p for p in files if p.suffix == ".pkl"]
    assert {p.suffix for p in files} <= {".npy", ".json", ".jsonl", ".lock"}
    for path in files:
        if path.suffix == ".npy":
            np.load(path, allow_pickle=False)  # data only: loads without pickle
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":  # the places of the documents a shard kept, a JSON value a line
            [json.loads(line) for line in path.read_text().splitlines()]


def test_linear_packer_gives_the_rows_of_pack_examples():
    rng = random.Random(0)
    for cutoff, count in ((64, 500), (256, 3000), (1024, 2000)):
        lengths = [rng.randint(1, cutoff) if rng.random() < 0.3 else rng.randint(1, cutoff // 4)
                   for _ in range(count)]
        rows, _ = pack_examples([{"input_ids": [i] * n, "labels": [i] * n} for i, n in enumerate(lengths)], cutoff)
        members, starts = pack_lengths(np.asarray(lengths), cutoff)
        ours = [members[starts[r]:starts[r + 1]].tolist() for r in range(len(starts) - 1)]
        theirs = [list(dict.fromkeys(row["input_ids"])) for row in rows]
        assert ours == theirs


RANK_SCRIPT = """
import json, os, sys
import torch.distributed as dist
from torch.utils.data import DistributedSampler
from transformers import AutoTokenizer
from recipes.config.load import load_recipe
from recipes.planning.plan import make_plan
from recipes.plugins.registry import get_registry
from recipes.data.prepare import prepare
from recipes.training import distributed

distributed.init("cpu")
registry = get_registry()
stage = make_plan(load_recipe(sys.argv[1], registry), registry).stages[0]
said = []
data = prepare(stage, AutoTokenizer.from_pretrained(sys.argv[2]), said.append)
sampler = DistributedSampler(data.train, shuffle=True, seed=42)  # what the HF Trainer uses under DDP
rows = [data.train[i]["input_ids"] for i in sampler]
json.dump({"rank": dist.get_rank(), "indices": list(sampler), "size": len(data.train), "rows": rows, "said": said,
           "timeout": distributed.collective_timeout().total_seconds()},
          open(os.path.join(sys.argv[3], f"rank{dist.get_rank()}.json"), "w"))
dist.barrier()
"""


def test_two_gloo_processes_prepare_the_store_once_and_both_read_its_rows(tokenizer, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("RECIPES_CACHE", str(tmp_path / "cache"))
    script = write(tmp_path / "rank.py", RANK_SCRIPT)
    recipe = _recipe(tmp_path, "sft", str(BUNDLED / "instructions.jsonl"), "messages", cutoff=256)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script), recipe, str(tiny_model), str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert any(line.startswith("data: prepared into the store") for line in ranks[0]["said"])
    assert not any(line.startswith("data: prepared into the store") for line in ranks[1]["said"])
    # (which rows each rank reads is torch's DistributedSampler, as the Trainer uses it; not checked here)
    assert ranks[0]["size"] == ranks[1]["size"] > 10
    [stage] = _plan(recipe).stages
    expected = _rows(prepare(stage, tokenizer, lambda m: None).train)
    for rank in ranks:
        assert rank["rows"] == [expected[i]["input_ids"] for i in rank["indices"]]
        assert rank["timeout"] == 120 * 60


def test_the_tokenizer_identity_is_kept_per_backend_and_follows_the_chat_template(tiny_model):
    """The serialization's digest is computed once per tokenizer; the key still changes with the chat
    template and with the tokens themselves (another tokenizer with a token added, or this one)."""
    from transformers import AutoTokenizer

    from recipes.data.prepare import tokenizer_identity

    first, second = AutoTokenizer.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    identity = tokenizer_identity(first)
    assert tokenizer_identity(first) == identity == tokenizer_identity(second)  # same files, same identity
    template = first.chat_template
    first.chat_template = template + "{# changed #}"
    assert tokenizer_identity(first) != identity
    first.chat_template = template
    assert tokenizer_identity(first) == identity
    other = AutoTokenizer.from_pretrained(tiny_model)
    other.add_tokens(["<|a_token_of_ours|>"])  # another vocabulary: another identity
    assert tokenizer_identity(other) != identity
    second.add_tokens(["<|a_token_of_ours|>"])  # added after its identity was kept: serialized again
    assert tokenizer_identity(second) == tokenizer_identity(other) != identity
