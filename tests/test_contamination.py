"""Decontamination's index on its own: 13 shared words or 50 shared CJK characters match (whatever the
case, spacing and punctuation), 12 words or 49 characters do not, the detail names the set; the index of
a plan holds every stage's eval_data and the benchmarks' items, every training source (replay too) of a
stage that decontaminates is checked, and the keys follow the reference files."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from conftest import write
from recipes.data.contamination import build_index, ngram_hashes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from planted_corpus import chinese_document, english_document  # noqa: E402

RNG = random.Random(7)
ENGLISH = english_document(RNG, 400)
CHINESE = chinese_document(RNG, 300)


def test_a_long_shared_run_matches_a_shorter_one_does_not():
    index = build_index([("eval set 'qa' of stage 'sft'", [ENGLISH, CHINESE, "too short to match"])])
    assert index.texts == 3 and index.short == 1 and "cannot be matched" in index.describe()
    words = ENGLISH.split()
    assert index.match("Unrelated words first. " + " ".join(words[5:18]).upper() + "!") == \
        "shares 13 words with eval set 'qa' of stage 'sft'"
    assert index.match("Unrelated words first. " + " ".join(words[5:17]) + " then other words") is None
    cjk = [c for c in CHINESE if "\u4e00" <= c <= "\u9fff"]
    copied = "".join(cjk[10:60])
    # another punctuation, spaces between characters, full-width forms: the same 50 characters
    assert index.match("前面的话。" + " ".join(copied[:25]) + "，" + copied[25:] + "后面") == \
        "shares 50 CJK characters with eval set 'qa' of stage 'sft'"
    assert index.match("前面的话。" + copied[:49] + "后面") is None
    assert index.match(english_document(RNG, 2000) + chinese_document(RNG, 2000)) is None


def test_hashes_do_not_depend_on_the_position():
    words, _ = ngram_hashes(ENGLISH)
    shifted, _ = ngram_hashes("several new words ahead " + ENGLISH)
    assert set(words.tolist()) <= set(shifted.tolist()) and len(shifted) == len(words) + 4


def test_an_empty_index_matches_nothing():
    index = build_index([])
    assert index.match(ENGLISH) is None and "nothing to check against" in index.describe()


RECIPE = """
[model]
path = "bundled:tiny-qwen2"
[[stages]]
name = "domain"
kind = "pretrain"
[[stages.data]]
path = "corpus.jsonl"
format = "text"
[[stages.data]]
path = "corpus.jsonl"
format = "text"
name = "replay"
dedup = "none"
[[stages]]
name = "chat"
decontaminate = false
kind = "sft"
[[stages.data]]
path = "chat.jsonl"
format = "messages"
[[stages.eval_data]]
path = "held.jsonl"
format = "messages"
name = "held"
[[benchmarks]]
name = "exam"
path = "exam.jsonl"
shots = 0
"""


def test_the_plan_index_covers_every_stage_eval_set_and_benchmark_item(tmp_path):
    from recipes.config.load import load_recipe
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry

    chat = {"messages": [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi"}]}
    write(tmp_path / "corpus.jsonl", json.dumps({"text": "some words " * 20}) + "\n")
    write(tmp_path / "chat.jsonl", json.dumps(chat) + "\n")
    held = {"messages": [{"role": "user", "content": ENGLISH[:200]}, {"role": "assistant", "content": CHINESE}]}
    write(tmp_path / "held.jsonl", json.dumps(held, ensure_ascii=False) + "\n")
    question = " ".join(english_document(RNG, 120).split()[:14])
    item = {"question": question, "choices": ["yes", "no"], "answer": 0}
    write(tmp_path / "exam.jsonl", json.dumps(item) + "\n")
    write(tmp_path / "recipe.toml", RECIPE)
    registry = get_registry()
    plan = make_plan(load_recipe(str(tmp_path / "recipe.toml"), registry), registry)
    said = []
    references = plan.stages[0].references  # every stage's evaluation sets, the chat stage's too
    index = references.index(said.append)
    assert index.sets == ["eval set 'held' of stage 'chat'", "benchmark 'exam'"] and index.texts == 2
    assert said[0].startswith("data: decontamination: ") and "2 reference set(s)" in said[0]
    assert index.match("intro " + question + " outro") == "shares 13 words with benchmark 'exam'"
    assert index.match(CHINESE[:120]).endswith("with eval set 'held' of stage 'chat'")
    assert index.match(ENGLISH[:200]) is not None
    # every training source is checked, replay (dedup = "none") too; a stage with decontaminate = false not
    from recipes.data.cleaning import stage_cleaning

    checked = [[reason for reason, _, _ in c.checks] for c in stage_cleaning(plan.stages[0])]
    assert checked == [["contaminated"], ["contaminated"]]
    assert plan.stages[1].references is None
    assert [c.checks for c in stage_cleaning(plan.stages[1])] == [()]
    from recipes.data.ready import record_key

    key, ready = references.key(), record_key(plan, plan.stages[0], registry)
    write(tmp_path / "exam.jsonl", json.dumps({**item, "question": question + " again"}) + "\n")
    # a changed benchmark file: another key, and `recipes prepare` does not take the stage as ready
    assert references.key() != key and record_key(plan, plan.stages[0], registry) != ready
