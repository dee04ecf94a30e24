"""Weighted sources through the real data phase (issue 15): one token store per source, the mix in
the stage's layout. Real tokenizer, real files, real prepare()."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import write


def _corpus(path, documents: int, words: int, tag: str):
    lines = [json.dumps({"text": " ".join(f"{tag}{d}w{w}" for w in range(words))}) for d in range(documents)]
    return write(path, "\n".join(lines) + "\n")


def _plan(tmp_path, body: str, seed: int = 42):
    from recipes.config.load import load_recipe
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry

    recipe = write(tmp_path / f"r{seed}.toml", '[model]\npath = "bundled:tiny-qwen2"\n[defaults]\n'
                   f'cutoff_len = 64\nseed = {seed}\n' + body)
    registry = get_registry()
    return make_plan(load_recipe(str(recipe), registry), registry)


MIX = '''[[stages]]
name = "domain"
kind = "pretrain"
val_size = 0.05
[[stages.data]]
path = "big.jsonl"
format = "text"
weight = 0.9
[[stages.data]]
path = "small.jsonl"
format = "text"
weight = 0.1
'''


@pytest.fixture
def sources(tmp_path):
    _corpus(tmp_path / "big.jsonl", 400, 60, "a")  # about 12x the small one
    _corpus(tmp_path / "small.jsonl", 40, 50, "b")
    return tmp_path


def _tokens_by_source(dataset) -> np.ndarray:
    from recipes.data.layout import examples_of

    examples = examples_of(dataset)
    counts = np.zeros(2, np.int64)
    for item in range(len(dataset)):
        counts[examples.source_of(item)] += len(dataset[item]["input_ids"])
    return counts


def test_weights_give_the_shares_seeded_and_the_same_order_again(sources, tokenizer, monkeypatch):
    from recipes.data.layout import examples_of
    from recipes.data.prepare import prepare

    plan = _plan(sources, MIX)
    data = prepare(plan.stages[0], tokenizer, lambda m: None)
    # the token counts of the very sequences the Trainer will read, by source
    counts = _tokens_by_source(data.train)
    shares = counts / counts.sum()
    assert abs(shares[0] - 0.9) < 0.01 and abs(shares[1] - 0.1) < 0.01
    big, small = data.mix
    assert (big["name"], small["name"]) == ("big", "small")
    assert small["tokens"] > small["offered_tokens"]  # the small source is over-sampled to reach 10%
    assert big["tokens"] == big["offered_tokens"]  # and the big one, the main source, is one pass per epoch
    assert sorted(data.evals) == ["val/big", "val/small"]  # a held-out share of each source
    order = np.asarray(examples_of(data.train).order).copy()
    assert 0 < (order[: len(order) // 5, 0] == 1).mean() < 0.3  # interleaved, not one source after the other

    # a resumed stage opens the same layout: the same order, row for row
    again = prepare(plan.stages[0], tokenizer, lambda m: None)
    assert again.cached and np.array_equal(np.asarray(examples_of(again.train).order), order)
    # built from nothing in another cache with the same seed: the same order; another seed: another
    monkeypatch.setenv("RECIPES_CACHE", str(sources / "other-cache"))
    rebuilt = prepare(plan.stages[0], tokenizer, lambda m: None)
    assert not rebuilt.cached and np.array_equal(np.asarray(examples_of(rebuilt.train).order), order)
    other = prepare(_plan(sources, MIX, seed=7).stages[0], tokenizer, lambda m: None)
    assert not np.array_equal(np.asarray(examples_of(other.train).order), order)


def test_max_samples_and_max_tokens_cap_a_source(sources, tokenizer):
    from recipes.data.prepare import prepare

    body = MIX.replace("weight = 0.9", "max_samples = 10").replace("weight = 0.1", "max_tokens = 200")
    data = prepare(_plan(sources, body.replace("val_size = 0.05", "val_size = 0")).stages[0], tokenizer, lambda m: None)
    big, small = data.mix
    assert (big["kept_examples"], big["examples"]) == (10, 10)  # the first 10 blocks of 64 tokens
    assert small["kept_examples"] == 3 and small["tokens"] <= 200  # 3 x 64 tokens fit in 200
    assert len(data.train) == 13 and list(_tokens_by_source(data.train)) == [big["tokens"], small["tokens"]]


def test_every_source_gets_a_weight_or_none_and_names_cannot_collide(tmp_path):
    from click.testing import CliRunner

    from recipes.cli import main

    for folder in ("a", "b"):
        _corpus(tmp_path / folder / "test.jsonl", 3, 5, folder)
    _corpus(tmp_path / "val.jsonl", 3, 5, "v")
    recipe = write(tmp_path / "r.toml", '''[model]
path = "bundled:tiny-qwen2"
[[stages]]
name = "domain"
kind = "pretrain"
val_size = 0.1
[[stages.data]]
path = "a/test.jsonl"
format = "text"
weight = 0.5
[[stages.data]]
path = "b/test.jsonl"
format = "text"
[[stages.eval_data]]
path = "val.jsonl"
format = "text"
weight = 1.0
''')
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert result.exit_code == 2
    text = result.output
    assert "r.toml:12:1: stages[0].data[1].path: two training sources of this stage are called 'test'" in text
    assert "stages[0].data[1].path: this source has no weight while another source of the stage has one" in text
    assert "stages[0].eval_data[0].weight: weight is a share of the training tokens" in text
    fixed = recipe.read_text().replace('path = "b/test.jsonl"', 'path = "b/test.jsonl"\nname = "b"\nweight = 0.5')
    write(recipe, fixed.replace("weight = 1.0\n", ""))
    assert CliRunner().invoke(main, ["validate", str(recipe)]).exit_code == 0  # val/test, val/b; and val
    # one training source holds out "val": an eval_data file called val.jsonl would share its name
    write(recipe, '[model]\npath = "bundled:tiny-qwen2"\n[[stages]]\nname = "d"\nkind = "pretrain"\nval_size = 0.1\n'
          '[[stages.data]]\npath = "a/test.jsonl"\nformat = "text"\n[[stages.eval_data]]\npath = "val.jsonl"\n'
          'format = "text"\n')
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert result.exit_code == 2 and "stages[0].eval_data[0].path: this evaluation set is called 'val'" in result.output
