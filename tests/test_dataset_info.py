"""LLaMA-Factory's dataset_info.json entries, resolved to our formats: every local entry's shape (small
samples written for the project in tests/fixtures/lf_data, under LLaMA-Factory's own entries) loads,
renders and labels with the genuine tokenizer and trains; what cannot load says why and what to do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recipes.data.tokenization import IGNORE_INDEX, DataStats, check_conversation, pretrain_examples, sft_examples
from recipes.config.dataset_info import resolve_dataset
from recipes.errors import RecipeError
from recipes.plugins.registry import get_registry
from conftest import write

DATA = Path(__file__).parent / "fixtures" / "lf_data"  # the shapes of LLaMA-Factory's local data sets


def load(resolved) -> list[dict]:
    """Every record of a resolved data set, through the registered format and its validated options."""
    provider = get_registry().formats[resolved.format_name]
    assert provider.yields == resolved.yields
    options = provider.options_model(**resolved.options)
    return [record for path in resolved.files for record in provider.read(path, options)]


@pytest.mark.parametrize("entry, fmt, count", [
    ("alpaca_zh_demo", "alpaca", 3), ("alpaca_en_demo", "alpaca", 4), ("identity", "alpaca", 4),
    ("glaive_toolcall_zh_demo", "sharegpt", 1), ("glaive_toolcall_en_demo", "sharegpt", 3),
    ("chat_role_content_demo", "sharegpt", 2),
])
def test_local_sft_data_sets_load_render_and_label(tokenizer, entry, fmt, count):
    resolved = resolve_dataset(DATA / "dataset_info.json", entry)
    assert (resolved.format_name, resolved.yields) == (fmt, "conversations")
    records = load(resolved)
    assert len(records) == count
    for record in records:
        check_conversation(record["messages"], record["_where"])
    sample = [r for r in records if "tools" in r][:4] if entry.startswith("glaive") else records[:4]
    stats = DataStats()
    examples = sft_examples(sample, tokenizer, 4096, stats)
    assert len(examples) == len(sample) and stats.truncated == 0
    for record, example in zip(sample, examples):
        messages = [{k: v for k, v in m.items() if k != "train"} for m in record["messages"]]
        assert example["input_ids"] == tokenizer.apply_chat_template(
            messages, tools=record.get("tools"), tokenize=True, return_dict=True)["input_ids"]
        learned = tokenizer.decode([t for t, label in zip(example["input_ids"], example["labels"])
                                    if label != IGNORE_INDEX])
        assert learned.endswith(record["messages"][-1]["content"] + "<|im_end|>")
    if entry == "identity":  # placeholders stay as they are
        assert "{{name}}" in json.dumps([r["messages"] for r in records], ensure_ascii=False)
    if entry.startswith("glaive"):
        text = tokenizer.decode(examples[0]["input_ids"])
        assert "<tools>" in text and "<tool_call>" in text and "<tool_response>" in text


@pytest.mark.parametrize("entry, suffix", [("c4_demo", ".jsonl"), ("wiki_demo", ".txt")])
def test_local_pretraining_corpora_load_as_text(tokenizer, entry, suffix):
    resolved = resolve_dataset(DATA / "dataset_info.json", entry)
    assert (resolved.format_name, resolved.yields, resolved.options) == ("text", "documents", {"text_field": "text"})
    assert [p.suffix for p in resolved.files] == [suffix]
    documents = load(resolved)
    assert len(documents) >= 3 and all(d["text"].strip() for d in documents)
    examples = pretrain_examples(documents[:20], tokenizer, 256, DataStats())
    assert examples and all(e["labels"] == e["input_ids"] for e in examples)


@pytest.mark.parametrize("entry, message", [
    ("mllm_demo", r"the column 'images' is not supported \(recipes trains on text, not images\)"),
    ("alpaca_en", r"on the Hugging Face hub \(hf_hub_url = 'llamafactory/alpaca_en'\).*no data from the network.*"
                  r"hf download llamafactory/alpaca_en --repo-type dataset.*\"file_name\""),
    ("deepctrl", r"on ModelScope \(ms_hub_url"),
    ("alpaca_en_dem", r"no data set 'alpaca_en_dem' here; did you mean \"alpaca_en_demo\"\?"),
])
def test_entries_that_cannot_load_say_why(entry, message):
    with pytest.raises(RecipeError, match=message) as info:
        resolve_dataset(DATA / "dataset_info.json", entry)
    assert str(DATA / "dataset_info.json") in str(info.value)


def index(tmp_path, **entries) -> Path:
    write(tmp_path / "data.json", json.dumps([{"q": "x", "a": "y"}]))
    return write(tmp_path / "dataset_info.json", json.dumps(entries))


@pytest.mark.parametrize("attrs, message", [
    ({"file_name": "data.json", "ranking": True, "formatting": "sharegpt", "columns": {"messages": "m", "images": "i"}},
     "the column 'images' is not supported"),
    ({"file_name": "data.json", "formatting": "sharegpt", "columns": {"messages": "m", "images": "i"}},
     "the column 'images' is not supported"),
    ({"file_name": "data.json", "colums": {}}, "unknown key 'colums'; did you mean \"columns\""),
    ({"file_name": "data.json", "formatting": "openai"}, "formatting 'openai' is not supported"),
    ({"file_name": "data.json", "columns": {"messages": "m"}}, "columns 'messages' is not one this formatting reads"),
    ({"file_name": "data.json", "tags": {"role_tag": "r"}}, "'tags' apply to sharegpt data"),
    ({"file_name": "nope.json"}, "file_name '.*nope.json' does not exist"),
    ({"file_name": "data.json", "split": "validation"}, "split 'validation'"),
    ({"file_name": "data.json", "num_samples": 10}, "num_samples is not supported"),
    ({"file_name": "data.json", "file_sha1": "0" * 40}, ".*data.json has sha1 .* but file_sha1 says 0000"),
    ({"script_url": "my_script"}, "it is built by a loading script"),
])
def test_unsupported_entries_are_refused_naming_the_entry(tmp_path, attrs, message):
    with pytest.raises(RecipeError, match=f"dataset_info.json: data set 'mine': {message}"):
        resolve_dataset(index(tmp_path, mine=attrs), "mine")


def test_renamed_columns_a_folder_and_sharegpt_tags(tmp_path):
    info = index(tmp_path, qa={"file_name": "data.json", "columns": {"prompt": "q", "response": "a"}},
                 chats={"file_name": "chats", "formatting": "sharegpt", "columns": {"messages": "messages"},
                        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                 "assistant_tag": "assistant"}})
    [record] = load(resolve_dataset(info, "qa"))
    assert [m["content"] for m in record["messages"]] == ["x", "y"]
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    write(tmp_path / "chats" / "b.jsonl", json.dumps(chat) + "\n")
    write(tmp_path / "chats" / "a.json", json.dumps([chat]))
    resolved = resolve_dataset(info, "chats")
    assert [p.name for p in resolved.files] == ["a.json", "b.jsonl"]
    assert [[m["content"] for m in r["messages"]] for r in load(resolved)] == [["hi", "yo"]] * 2


def test_resolving_imports_no_torch(tmp_path):
    info = index(tmp_path, qa={"file_name": "data.json"})
    code = (f"import sys; from recipes.config.dataset_info import resolve_dataset; import recipes.builtin.formats; "
            f"resolve_dataset({str(info)!r}, 'qa'); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_local_entry_trains_through_dataset_info(tmp_path, tiny_model):
    """A recipe naming each local entry by dataset_info + dataset runs on the tiny model (one step a stage)."""
    from click.testing import CliRunner

    from recipes.cli import main

    info = DATA / "dataset_info.json"

    def sources(*names):
        return "".join(f'\n[[stages.data]]\ndataset_info = "{info}"\ndataset = "{n}"\n' for n in names)

    sft_entries = ("identity", "alpaca_en_demo", "alpaca_zh_demo", "glaive_toolcall_en_demo",
                   "glaive_toolcall_zh_demo", "chat_role_content_demo")
    recipe = write(tmp_path / "all.toml", f"""name = "all"
[model]
path = "bundled:tiny-qwen2"
[defaults]
max_steps = 1
cutoff_len = 256
per_device_train_batch_size = 2
gradient_accumulation_steps = 1
[[stages]]
name = "domain"
kind = "pretrain"
{sources("wiki_demo", "c4_demo")}
[[stages]]
name = "sft"
kind = "sft"
{sources(*sft_entries)}""")
    result = CliRunner().invoke(main, ["run", str(recipe), "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    stats = {name: json.loads((tmp_path / "run" / "stages" / name / "stage.json").read_text())["data"]
             for name in ("domain", "sft")}
    assert stats["domain"]["records"] == 3 + 4 and stats["sft"]["records"] == 4 + 4 + 3 + 3 + 1 + 2
    assert stats["sft"]["dropped"] == 0 and stats["sft"]["label_tokens"] > 0
