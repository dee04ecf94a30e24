"""`recipes data inspect`, the token store, and LLaMA-Factory's demo data sets through a recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import write
from recipes.cli import main

LF_DATA = Path(__file__).resolve().parent / "fixtures" / "lf_data"  # small samples of LLaMA-Factory's demo sets


def test_inspect_shows_counts_and_the_trained_tokens(demo_run):
    result = CliRunner().invoke(main, ["data", "inspect", "demo", "-n", "1", "--json"])
    assert result.exit_code == 0, result.output
    domain, sft = json.loads(result.output)["stages"]
    # the demo run tokenized the same data with the same tokenizer: the cache serves it now
    assert domain["cached"] and sft["cached"]
    # the domain stage mixes the beekeeping corpus (80 records) and the general sample (40), 0.8 / 0.2
    assert (domain["records"], domain["tokens"], domain["supervised_tokens"]) == (120, 5693, 5693)
    corpus, general = domain["mix"]
    assert (corpus["name"], general["name"]) == ("domain_corpus", "general_corpus")
    # whole examples: the general sample's share lands within a few of its documents of 20%
    assert abs(corpus["share"] - 0.8) < 0.03 and abs(general["share"] - 0.2) < 0.03
    # an epoch is one pass over the main source (the largest weight); the general one is under-sampled
    assert corpus["tokens"] == corpus["offered_tokens"] and general["tokens"] < general["offered_tokens"]
    assert sft["records"] == 60 and 0 < sft["supervised_tokens"] < sft["tokens"]
    assert sft["held_out"] == 6 and sft["packing"]["efficiency"] > sft["padded_efficiency"]
    [example] = sft["examples"]
    trained = [p["text"] for p in example if p["trained"]]
    untrained = "".join(p["text"] for p in example if not p["trained"])
    assert trained and all(t.endswith("<|im_end|>") for t in trained)  # each answer and its turn end
    assert "<|im_start|>user" in untrained and "<|im_start|>assistant\n" in untrained

    text = CliRunner().invoke(main, ["data", "inspect", "demo", "--stage", "sft", "-n", "1"]).output
    assert "packing: 23 rows" in text and "example 1 (trained, not trained):" in text
    assert CliRunner().invoke(main, ["data", "inspect", "demo", "--stage", "stf"]).exit_code == 2


def test_the_run_names_each_sources_store_and_preparing_again_reads_that_store(demo_run):
    import re

    _, output = demo_run
    # one store per source: the domain stage's two, then the sft stage's
    used = re.findall(r"^  data(?: '\w+')?: (?:prepared into|from the prepared) (?:the )?store (\S+) ", output, re.M)
    assert len(used) == 3 and all((Path(folder) / "store.json").is_file() for folder in used)
    from recipes.config.load import load_recipe
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry
    from recipes.data.prepare import prepare
    from transformers import AutoTokenizer

    registry = get_registry()
    plan = make_plan(load_recipe("demo", registry), registry)
    tokenizer = AutoTokenizer.from_pretrained(demo_run[0] / "stages" / "domain" / "merged")
    said = []
    data = prepare(plan.stages[1], tokenizer, said.append)
    stores = [line for line in said if "store" in line]  # (decontamination's line may come first)
    assert data.cached and len(stores) == 1 and stores[0].startswith(f"data: from the prepared store {data.store.folder} ")
    assert str(data.store.folder) == used[2]  # the run's stage 2 used this very store


def test_a_data_error_before_the_first_shard_writes_no_data(tmp_path, tokenizer, monkeypatch):
    from recipes.errors import RecipeError
    from recipes.config.load import load_recipe
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry
    from recipes.data.prepare import cache_dir, prepare

    monkeypatch.setenv("RECIPES_CACHE", str(tmp_path / "cache"))
    write(tmp_path / "chat.jsonl", '{"messages": [{"role": "user", "content": "Q"}]}\n{"oops"\n')
    recipe = write(tmp_path / "r.toml", '[model]\npath = "bundled:tiny-qwen2"\n[[stages]]\nname = "s"\nkind = "sft"\n'
                                        '[[stages.data]]\npath = "chat.jsonl"\nformat = "messages"\n')
    registry = get_registry()
    plan = make_plan(load_recipe(str(recipe), registry), registry)
    with pytest.raises(RecipeError, match="chat.jsonl:2"):
        prepare(plan.stages[0], tokenizer, lambda m: None)
    # no store is ready and no shard was written (a failure after some shards would keep them, to resume)
    written = [f.name for f in cache_dir().rglob("*") if f.is_file() and f.suffix != ".lock"]
    assert cache_dir().is_dir() and written == []


LLAMA_FACTORY = """
[model]
path = "bundled:tiny-qwen2"
[defaults]
cutoff_len = 128
max_steps = 2
per_device_train_batch_size = 2
gradient_accumulation_steps = 1
learning_rate = 1e-3
[[stages]]
name = "pt"
kind = "pretrain"
[[stages.data]]
dataset_info = "{info}"
dataset = "c4_demo"
[[stages.data]]
dataset_info = "{info}"
dataset = "wiki_demo"
[[stages]]
name = "sft"
kind = "sft"
{sft}
"""


def test_llamafactory_demo_data_sets_load_through_dataset_info_and_train(tmp_path, tiny_model):
    info = LF_DATA / "dataset_info.json"
    names = ("alpaca_zh_demo", "alpaca_en_demo", "identity", "glaive_toolcall_zh_demo")
    entries = json.loads(info.read_text(encoding="utf-8"))
    expected = sum(len(json.loads((LF_DATA / entries[n]["file_name"]).read_text(encoding="utf-8"))) for n in names)
    sft = "".join(f'[[stages.data]]\ndataset_info = "{info}"\ndataset = "{name}"\n' for name in names)
    recipe = write(tmp_path / "lf.toml", LLAMA_FACTORY.format(info=info, sft=sft))
    result = CliRunner().invoke(main, ["run", str(recipe), "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    for stage in ("pt", "sft"):
        summary = json.loads((tmp_path / "run" / "stages" / stage / "stage.json").read_text())
        assert summary["steps"] == 2
    pt = json.loads((tmp_path / "run" / "stages" / "pt" / "stage.json").read_text())["data"]
    sft = json.loads((tmp_path / "run" / "stages" / "sft" / "stage.json").read_text())["data"]
    assert pt["records"] > 0 and sft["records"] == expected == 12
