"""The built-in formats, read from real files through the plugin registry, rendered and labelled with
the genuine Qwen tokenizer: the tokens are the chat template's own, the labels sit where the options say."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from recipes.data.tokenization import IGNORE_INDEX, DataStats, sft_examples
from recipes.errors import RecipeError
from recipes.plugins.registry import get_registry
from conftest import write

IM_END, NEWLINE = 151645, 198


def read(fmt: str, path, **options) -> list[dict]:
    provider = get_registry().formats[fmt]
    return list(provider.read(path, provider.options_model(**options)))


def tokens(tokenizer, record: dict) -> tuple[list[int], list[int]]:
    [example] = sft_examples([record], tokenizer, 4096, DataStats())
    return example["input_ids"], example["labels"]


def template_ids(tokenizer, record: dict) -> list[int]:
    """What the tokenizer's own chat template makes of the conversation, without our flags."""
    messages = [{k: v for k, v in m.items() if k != "train"} for m in record["messages"]]
    return tokenizer.apply_chat_template(messages, tools=record.get("tools"), tokenize=True,
                                         return_dict=True)["input_ids"]


def learned_text(tokenizer, ids, labels) -> str:
    return tokenizer.decode([t for t, label in zip(ids, labels) if label != IGNORE_INDEX])


# --- text ---------------------------------------------------------------------------------------

def test_text_from_txt_lines_and_whole_files(tmp_path):
    path = write(tmp_path / "a.txt", "Bees make honey.\n\n蜜蜂酿蜜。\n")
    assert [(r["text"], r["_where"]) for r in read("text", path)] == [
        ("Bees make honey.", f"{path}:1"), ("蜜蜂酿蜜。", f"{path}:3")]
    assert [r["text"] for r in read("text", path, split="file")] == ["Bees make honey.\n\n蜜蜂酿蜜。\n"]


def test_text_from_json_jsonl_csv_and_parquet_with_a_renamed_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = ["Queens lay eggs.", "Drones, \"males\", mate.\nThen die."]
    write(tmp_path / "d.jsonl", "".join(json.dumps({"body": d}) + "\n" for d in docs))
    write(tmp_path / "d.json", json.dumps([{"body": d} for d in docs]))
    with open(tmp_path / "d.csv", "w", newline="", encoding="utf-8") as handle:
        import csv

        writer = csv.writer(handle)
        writer.writerow(["id", "body"])
        writer.writerows([[i, d] for i, d in enumerate(docs)])
    pq.write_table(pa.table({"body": docs}), tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.json", "d.csv", "d.parquet"):
        assert [r["text"] for r in read("text", tmp_path / name, text_field="body")] == docs, name
    # a CSV row is named by the line it starts on, even after a multi-line cell
    assert [r["_where"] for r in read("text", tmp_path / "d.csv", text_field="body")] == [
        f"{tmp_path / 'd.csv'}:2", f"{tmp_path / 'd.csv'}:3"]


# --- alpaca -------------------------------------------------------------------------------------

def test_alpaca_with_system_history_and_renamed_columns(tmp_path, tokenizer):
    record = {"q": "Translate", "ctx": "蜜蜂", "a": "bee", "sys": "You translate.",
              "past": [["Say hi", "Hi"]]}
    path = write(tmp_path / "a.json", json.dumps([record]))
    [conv] = read("alpaca", path, prompt="q", query="ctx", response="a", system="sys", history="past")
    assert [(m["role"], m["content"]) for m in conv["messages"]] == [
        ("system", "You translate."), ("user", "Say hi"), ("assistant", "Hi"),
        ("user", "Translate\n蜜蜂"), ("assistant", "bee")]
    ids, labels = tokens(tokenizer, conv)
    assert ids == template_ids(tokenizer, conv)
    assert learned_text(tokenizer, ids, labels) == "Hi<|im_end|>bee<|im_end|>"


def test_alpaca_from_csv(tmp_path, tokenizer):
    path = write(tmp_path / "a.csv", "instruction,input,output\nName a bee,,Apis mellifera\n")
    [conv] = read("alpaca", path)
    assert conv["messages"][0] == {"role": "user", "content": "Name a bee", "train": False}
    assert conv["_where"] == f"{path}:2"


# --- masking, on every conversation format -------------------------------------------------------

THREE_TURNS = [["Q1", "A1"], ["Q2", "A2"]]


@pytest.mark.parametrize("fmt", ["alpaca", "sharegpt", "messages"])
def test_masking_options(tmp_path, tokenizer, fmt):
    if fmt == "alpaca":
        data = {"instruction": "Q3", "output": "A3", "history": THREE_TURNS}
    elif fmt == "sharegpt":
        data = {"conversations": [{"from": w, "value": t} for q, a in THREE_TURNS + [["Q3", "A3"]]
                                  for w, t in (("human", q), ("gpt", a))]}
    else:
        data = {"messages": [{"role": r, "content": t} for q, a in THREE_TURNS + [["Q3", "A3"]]
                             for r, t in (("user", q), ("assistant", a))]}
    path = write(tmp_path / f"{fmt}.jsonl", json.dumps(data) + "\n")

    [default] = read(fmt, path)
    ids, labels = tokens(tokenizer, default)
    assert ids == template_ids(tokenizer, default)
    assert learned_text(tokenizer, ids, labels) == "A1<|im_end|>A2<|im_end|>A3<|im_end|>"

    [everything] = read(fmt, path, train_on_prompt=True)
    ids, labels = tokens(tokenizer, everything)
    assert ids == template_ids(tokenizer, everything)
    # every token, but the newline after the last <|im_end|>: the model is to stop there
    assert labels[:-1] == ids[:-1] and ids[-2:] == [IM_END, NEWLINE] and labels[-1] == IGNORE_INDEX

    [last] = read(fmt, path, mask_history=True)
    ids, labels = tokens(tokenizer, last)
    assert ids == template_ids(tokenizer, last)
    assert learned_text(tokenizer, ids, labels) == "A3<|im_end|>"


def test_masking_options_that_contradict_are_refused():
    with pytest.raises(ValidationError, match="train_on_prompt and mask_history"):
        get_registry().formats["alpaca"].options_model(train_on_prompt=True, mask_history=True)
    with pytest.raises(ValidationError, match="extra"):
        get_registry().formats["sharegpt"].options_model(role="from")


# --- sharegpt with tools ------------------------------------------------------------------------

GLAIVE_LIKE = {
    "conversations": [
        {"from": "human", "value": "给我一个8位密码"},
        {"from": "function_call", "value": json.dumps({"name": "generate_password", "arguments": {"length": 8}})},
        {"from": "observation", "value": json.dumps({"password": "a1B2c3D4"})},
        {"from": "gpt", "value": "你的密码是 a1B2c3D4。"},
    ],
    "tools": json.dumps([{"name": "generate_password", "description": "生成随机密码",
                          "parameters": {"type": "object", "properties": {"length": {"type": "integer"}},
                                         "required": ["length"]}}]),
    "system": "You help with passwords.",
}


def test_sharegpt_function_calls_and_observations_render_as_qwen_tool_turns(tmp_path, tokenizer):
    path = write(tmp_path / "g.json", json.dumps([GLAIVE_LIKE], ensure_ascii=False))
    [conv] = read("sharegpt", path)
    assert [m["role"] for m in conv["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    assert conv["messages"][2]["tool_calls"] == [
        {"type": "function", "function": {"name": "generate_password", "arguments": {"length": 8}}}]
    assert conv["tools"][0]["type"] == "function" and conv["tools"][0]["function"]["name"] == "generate_password"
    ids, labels = tokens(tokenizer, conv)
    assert ids == template_ids(tokenizer, conv)
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nYou help with passwords.\n\n# Tools\n")
    assert '<|im_start|>user\n<tool_response>\n{"password": "a1B2c3D4"}\n</tool_response><|im_end|>' in text
    # the call and the answer are learned; the tool's result is not
    assert learned_text(tokenizer, ids, labels) == (
        '<tool_call>\n{"name": "generate_password", "arguments": {"length": 8}}\n</tool_call><|im_end|>'
        "你的密码是 a1B2c3D4。<|im_end|>")


def test_sharegpt_with_openai_tags_and_a_system_turn(tmp_path, tokenizer):
    data = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "Hello"}]}
    path = write(tmp_path / "s.jsonl", json.dumps(data) + "\n")
    [conv] = read("sharegpt", path, messages="messages", role_tag="role", content_tag="content",
                  user_tag="user", assistant_tag="assistant")
    assert conv["messages"][0]["content"] == "Be brief."
    ids, labels = tokens(tokenizer, conv)
    assert ids == template_ids(tokenizer, conv)


# --- messages -----------------------------------------------------------------------------------

def test_messages_with_text_parts_and_loss_weight(tmp_path, tokenizer):
    data = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Two "}, {"type": "text", "value": "parts"}]},
        {"role": "assistant", "content": "a bad answer", "loss_weight": 0},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": [{"type": "text", "text": "a good answer"}], "loss_weight": 1},
    ]}
    path = write(tmp_path / "m.jsonl", json.dumps(data) + "\n")
    [conv] = read("messages", path)
    assert conv["messages"][0]["content"] == "Two parts"
    ids, labels = tokens(tokenizer, conv)
    assert ids == template_ids(tokenizer, conv)
    assert learned_text(tokenizer, ids, labels) == "a good answer<|im_end|>"


def test_messages_with_openai_tool_calls(tmp_path, tokenizer):
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}
    data = {"messages": [{"role": "user", "content": "call f"},
                         {"role": "assistant", "content": None, "tool_calls": [call]},
                         {"role": "tool", "content": "2"}, {"role": "assistant", "content": "It is 2."}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}
    path = write(tmp_path / "m.jsonl", json.dumps(data) + "\n")
    [conv] = read("messages", path)
    ids, labels = tokens(tokenizer, conv)
    assert ids == template_ids(tokenizer, conv)
    assert learned_text(tokenizer, ids, labels).endswith('"arguments": {"x": 1}}\n</tool_call><|im_end|>It is 2.<|im_end|>')


# --- bad input: every message names the record and the column -----------------------------------

@pytest.mark.parametrize("fmt, content, suffix, expected", [
    ("alpaca", '{"instruction": "x", "output": "y"}\n{"instruction": "x"}\n', "jsonl",
     r":2: missing column 'output' \(columns here: instruction\); set the format option 'response'"),
    ("alpaca", '[{"instruction": "x", "output": 3}]', "json", r"\[0\]: column 'output' must be a string, got int"),
    ("alpaca", '[{"instruction": "x", "output": "y", "history": "no"}]', "json",
     r"\[0\]: column 'history' must be a list, got str"),
    ("text", "id,text\n1,x\n2,y,z\n", "csv", r":3: 3 cells but the header has 2 columns"),
    ("text", "id\n1\n", "csv", r":2: missing column 'text' \(columns here: id\); set the format option 'text_field'"),
    ("sharegpt", '{"conversations": [{"from": "human", "value": "x"}, {"from": "bot", "value": "y"}]}\n', "jsonl",
     r":1 turn 1: unknown 'from' value 'bot'"),
    ("sharegpt", '{"conversations": [{"from": "human"}]}\n', "jsonl", r":1 turn 0: missing column 'value'"),
    ("sharegpt", '{"conversations": [{"from": "function_call", "value": "{not json"}]}\n', "jsonl",
     r":1 turn 0: a 'function_call' turn must hold JSON"),
    ("sharegpt", '{"conversations": [], "tools": "[oops"}\n', "jsonl", r":1: column 'tools' is not valid JSON"),
    ("messages", '{"messages": [{"role": "user", "content": 5}]}\n', "jsonl",
     r":1 message 0: 'content' must be a string or a list of typed parts, got int"),
    ("messages", '{"messages": [{"role": "assistant", "content": "x", "loss_weight": 0.5}]}\n', "jsonl",
     r":1 message 0: 'loss_weight' must be 0 or 1"),
    ("messages", '{"messages": [{"role": "user", "content": "x"}]}\n{"messages": [\n', "jsonl",
     r":2: not valid JSON"),
])
def test_bad_records_are_named_with_the_column(tmp_path, fmt, content, suffix, expected):
    path = write(tmp_path / f"bad.{suffix}", content)
    with pytest.raises(RecipeError, match=expected) as info:
        read(fmt, path)
    assert str(info.value).startswith(str(path))


def test_a_conversation_out_of_order_names_the_record(tmp_path, tokenizer):
    path = write(tmp_path / "m.jsonl", json.dumps({"messages": [{"role": "user", "content": "a"},
                                                               {"role": "tool", "content": "b"},
                                                               {"role": "assistant", "content": "c"}]}) + "\n")
    with pytest.raises(RecipeError, match=rf"{path}:1: message 1 is 'tool' after user; expected 'assistant'"):
        sft_examples(read("messages", path), tokenizer, 1024, DataStats())


def test_a_table_format_refuses_other_files(tmp_path):
    path = write(tmp_path / "notes.md", "# hi\n")
    with pytest.raises(RecipeError, match=r"notes.md: cannot read .md records; expected one of .json, .jsonl"):
        read("alpaca", path)
