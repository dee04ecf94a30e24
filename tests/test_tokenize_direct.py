"""Preparation calls the Rust tokenizer directly and decides a ready store without transformers: the
token ids are those of transformers' own call, on the texts that trip tokenizers up (special tokens
written in the text, CJK, emoji, combining marks, long documents), for pre-training and for SFT; a
ready store is reported without importing torch or transformers, and only while it is what the
recipe would prepare."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import write
from recipes.data import batch_tokenize

TEXTS = [
    "plain English, with numbers 12345 and punctuation!?",
    "蜜蜂在春天采集花蜜。蜂王每天产卵约两千枚，工蜂负责哺育幼虫。",
    "mixed 中文 and English 混合, emoji 🐝🍯👩‍🌾 and flags 🇨🇳",
    "special tokens in the text: <|im_start|>user\nhi<|im_end|> and <|endoftext|> mid-document",
    "combining marks: e\u0301 a\u0300 \u00e9; tabs\tand  double  spaces; trailing newline\n",
    "   leading spaces and a very long word " + "x" * 3000,
    ("一段很长的文档。" * 4000) + " and then English " * 2000,  # long: tens of thousands of tokens
    "",  # an empty document
]


def test_the_direct_call_is_taken_and_gives_transformers_own_ids(tokenizer):
    assert batch_tokenize.backend(tokenizer) is not None  # the direct path is the one under test
    expected = tokenizer(TEXTS, add_special_tokens=False)["input_ids"]
    assert batch_tokenize.document_ids(TEXTS, tokenizer) == expected
    assert sum(len(ids) for ids in expected) > 20_000
    separator = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    chunk = batch_tokenize.documents(TEXTS, tokenizer, separator)
    assert chunk.ids.tolist() == [t for ids in expected for t in ids + [separator]]


def test_conversations_get_the_same_ids_and_labels_through_either_call(tokenizer, monkeypatch):
    records = [{"messages": [{"role": "user", "content": text or "empty?"},
                             {"role": "assistant", "content": TEXTS[(i + 1) % len(TEXTS)][:400] or "ok"}]}
               for i, text in enumerate(TEXTS[:6])]
    direct = batch_tokenize.conversations(records, tokenizer, 4096, "truncate")
    monkeypatch.setattr(batch_tokenize, "backend", lambda tokenizer: None)  # transformers' own call
    wrapped = batch_tokenize.conversations(records, tokenizer, 4096, "truncate")
    assert direct.ids.size > 500 and 0 < direct.mask.sum() < direct.mask.size
    assert np.array_equal(direct.ids, wrapped.ids) and np.array_equal(direct.mask, wrapped.mask)
    assert direct.lengths.tolist() == wrapped.lengths.tolist()


def test_a_backend_set_up_differently_goes_through_transformers(tokenizer):
    rust = tokenizer._tokenizer
    rust.enable_truncation(8)
    try:
        assert batch_tokenize.backend(tokenizer) is None
    finally:
        rust.no_truncation()
    assert batch_tokenize.backend(tokenizer) is not None


def test_the_kept_tokenizer_is_transformers_own(tokenizer, tiny_model, tmp_path, monkeypatch):
    from recipes.data.known_tokenizer import known_tokenizer, remember_tokenizer
    from recipes.data.prepare import tokenizer_identity
    from recipes.data.tokenization import document_separator

    monkeypatch.setenv("RECIPES_CACHE", str(tmp_path / "cache"))
    assert known_tokenizer(str(tiny_model), False) is None  # nothing kept yet
    remember_tokenizer(str(tiny_model), False, tokenizer)
    known = known_tokenizer(str(tiny_model), False)
    assert known is not None and batch_tokenize.backend(known) is not None
    assert batch_tokenize.document_ids(TEXTS, known) == tokenizer(TEXTS, add_special_tokens=False)["input_ids"]
    assert document_separator(known) == document_separator(tokenizer) == 151643
    assert tokenizer_identity(known) == tokenizer_identity(tokenizer)  # the same store key
    # kept: transformers' own tokenizer, with whole-word lookup set (Qwen's merges rebuild every word)
    built, kept = (json.loads(t.to_str()) for t in (tokenizer.backend_tokenizer, known.backend_tokenizer))
    assert not built["model"]["ignore_merges"] and kept["model"]["ignore_merges"]
    assert kept == {**built, "model": {**built["model"], "ignore_merges": True}}
    # a changed file of the model folder, or trusting remote code, is another entry
    assert known_tokenizer(str(tiny_model), True) is None
    other = tmp_path / "model"
    other.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        (other / name).write_bytes((tiny_model / name).read_bytes())
    remember_tokenizer(str(other), False, tokenizer)
    assert known_tokenizer(str(other), False) is not None
    config = json.loads((other / "tokenizer_config.json").read_text())
    (other / "tokenizer_config.json").write_text(json.dumps({**config, "split_special_tokens": True}))
    assert known_tokenizer(str(other), False) is None


def test_documents_read_while_the_tokenizer_threads_encode_give_the_same_store(tokenizer, tmp_path, monkeypatch):
    from recipes.bad_records import BadRecords
    from recipes.data import build
    from recipes.data.progress import Progress

    class Text:  # the text format's reader, records in memory
        @staticmethod
        def read(path, options):
            return iter({"text": t} for t in texts)

    texts = [t for t in TEXTS if t] * 2
    monkeypatch.setattr(build, "CHUNK_CHARACTERS", 2000)  # several chunks: the thread and the reader overlap
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    separator = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    info = build.build_store(tmp_path / "store", [(Text, None, ["corpus"])], "documents", tokenizer, (separator,),
                             BadRecords(False, 0), 2, Progress(1, "test"))
    assert info["threads"] and info["workers"] == 2 and len(info["shards"]) > 3
    stored = np.concatenate([np.load(tmp_path / "store" / f"shard-{i:05d}.ids.npy") for i in range(len(info["shards"]))])
    expected = batch_tokenize.documents(texts, tokenizer, separator).ids
    assert np.array_equal(stored, expected)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # the control: processes when the threads are off
    info = build.build_store(tmp_path / "again", [(Text, None, ["corpus"])], "documents", tokenizer, (separator,),
                             BadRecords(False, 0), 2, Progress(1, "test"))
    assert not info["threads"] and info["workers"] == 2


def test_whole_words_are_looked_up_only_where_the_merges_give_the_same_token():
    from tokenizers import Tokenizer
    from tokenizers.models import BPE

    from recipes.data.known_tokenizer import merges_reproduce_vocab

    # "abc" is a word of the vocabulary that the merges never build: b+c merges first, then a+bc is no merge
    rust = Tokenizer(BPE({"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5}, [("b", "c"), ("a", "b")]))
    assert not merges_reproduce_vocab(rust) and rust.encode("abc").ids == [0, 4]
    rust.model.ignore_merges = True
    assert rust.encode("abc").ids == [5]  # the control: looking it up whole would change the ids
    rust = Tokenizer(BPE({"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4}, [("a", "b"), ("ab", "c")]))
    assert merges_reproduce_vocab(rust)


PROBE = """
import sys
from recipes.cli import main
try:
    main(["prepare", sys.argv[1]], standalone_mode=False)
finally:
    print("IMPORTED", " ".join(m for m in ("torch", "transformers") if m in sys.modules))
"""


def _prepare(recipe: Path, env: dict) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE, str(recipe)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_a_ready_store_is_reported_without_torch_and_only_while_it_is_current(tiny_model, tmp_path):
    corpus = write(tmp_path / "corpus.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in TEXTS if t))
    recipe = write(tmp_path / "r.toml", f'[model]\npath = "{tiny_model}"\n[[stages]]\nname = "s"\n'
                   f'kind = "pretrain"\ncutoff_len = 64\n[[stages.data]]\npath = "{corpus}"\nformat = "text"\n')
    env = {**os.environ, "RECIPES_CACHE": str(tmp_path / "cache")}
    first = _prepare(recipe, env)
    assert "prepared into the store" in first and "IMPORTED torch transformers" in first  # the control
    again = _prepare(recipe, env)
    assert "from the prepared store" in again and again.splitlines()[-1].strip() == "IMPORTED"
    assert again.splitlines()[-2] == first.splitlines()[-2]  # the same summary line
    # a changed document is prepared again, into a new store, with the tokenizer transformers built
    # the first time (kept in the cache) and without importing either: the same ids, one more document
    write(corpus, corpus.read_text() + json.dumps({"text": "one more document"}) + "\n")
    changed = _prepare(recipe, env)
    assert "prepared into the store" in changed and changed.splitlines()[-1].strip() == "IMPORTED"
    first_ids, changed_ids = _store_ids(first), _store_ids(changed)
    assert len(changed_ids) - len(first_ids) == 4 and np.array_equal(changed_ids[:len(first_ids)], first_ids)  # "one more document" + separator
    # a store that lost its completion marker is not trusted
    record = max((tmp_path / "cache" / "store" / "ready").glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    markers = [Path(m) for m in json.loads(record.read_text())["markers"]]
    assert markers and all(m.is_file() for m in markers)
    markers[0].unlink()
    rebuilt = _prepare(recipe, env)
    assert "prepared into the store" in rebuilt and markers[0].is_file()


def _store_ids(output: str) -> np.ndarray:
    """The token ids of the store a preparation's output names."""
    folder = Path(output.split("into the store ")[1].split()[0])
    return np.concatenate([np.load(p) for p in sorted(folder.glob("shard-*.ids.npy"))])
