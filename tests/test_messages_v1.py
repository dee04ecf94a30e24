"""LLaMA-Factory's v1 messages (typed parts with ``value``, ``loss_weight`` on every message, reasoning,
tool calls as parts) and parallel tool calls, read from real files and labelled with the genuine Qwen
tokenizer: the ids are the chat template's own, the labels exactly the trained tokens."""

from __future__ import annotations

import json

import pytest

from recipes.data.tokenization import IGNORE_INDEX, DataStats, sft_examples
from recipes.errors import RecipeError
from recipes.plugins.registry import get_registry
from conftest import write

IM_START, IM_END, NEWLINE = 151644, 151645, 198


def read(path, fmt="messages", **options) -> list[dict]:
    provider = get_registry().formats[fmt]
    return list(provider.read(path, provider.options_model(**options)))


def tokens(tokenizer, record: dict) -> tuple[list[int], list[int]]:
    [example] = sft_examples([record], tokenizer, 4096, DataStats())
    return example["input_ids"], example["labels"]


def template_ids(tokenizer, record: dict) -> list[int]:
    """The tokenizer's own chat template on the conversation (our flags left out)."""
    messages = [{k: v for k, v in m.items() if k not in ("train", "context_prefix")} for m in record["messages"]]
    return tokenizer.apply_chat_template(messages, tools=record.get("tools"), tokenize=True,
                                         return_dict=True)["input_ids"]


def trained_ids(ids, labels) -> list[int]:
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(ids, labels))
    return [token for token, label in zip(ids, labels) if label != IGNORE_INDEX]


def encode(tokenizer, *texts: str) -> list[int]:
    return [t for text in texts for t in tokenizer(text, add_special_tokens=False)["input_ids"]]


def text(value: str) -> dict:
    return {"type": "text", "value": value}


def v1(role: str, weight: float, *parts: dict) -> dict:
    return {"role": role, "content": list(parts), "loss_weight": weight}


def call(name: str, **arguments) -> dict:
    return {"type": "tool_call", "value": json.dumps({"name": name, "arguments": arguments})}


V1_RECORD = {"messages": [
    v1("system", 0.0, text("Be brief.")),
    v1("user", 0.0, text("2+2?")),
    v1("assistant", 1.0, {"type": "reasoning", "value": "\nAdd them.\n"}, text("4")),
    v1("user", 1.0, text("Teach me this question")),
    v1("assistant", 0.0, text("no")),
    v1("user", 0.0, {"type": "text", "text": "And "}, text("3+3?")),
    v1("assistant", 1.0, text("6")),
]}


def test_v1_messages_with_loss_weight_on_every_message_and_reasoning(tmp_path, tokenizer):
    path = write(tmp_path / "v1.jsonl", json.dumps(V1_RECORD) + "\n")
    [conv] = read(path)
    assert [m["train"] for m in conv["messages"]] == [False, False, True, True, False, False, True]
    ids, labels = tokens(tokenizer, conv)
    assert ids == template_ids(tokenizer, conv)
    rendered = tokenizer.decode(ids)
    # Qwen3's template renders reasoning_content as "<think>\n" + it.strip("\n") + "\n</think>\n\n" + content
    assert "<|im_start|>assistant\n<think>\nAdd them.\n</think>\n\n4<|im_end|>\n" in rendered
    assert "<|im_start|>user\nAnd 3+3?<|im_end|>" in rendered
    # trained: the first answer with its thinking, the user turn with loss_weight 1 (its whole turn, as
    # rendered after the answer before it), the last answer; not the answer with loss_weight 0
    expected = encode(tokenizer, "<think>\nAdd them.\n</think>\n\n4") + [IM_END, NEWLINE, IM_START] + \
        encode(tokenizer, "user\nTeach me this question") + [IM_END] + encode(tokenizer, "6") + [IM_END]
    assert trained_ids(ids, labels) == expected
    # the same, as Qwen's ids (Qwen2.5's vocabulary has no <think> token: the tags are text here)
    assert expected == [13708, 766, 397, 2212, 1105, 624, 522, 26865, 1339, 19, IM_END, NEWLINE, IM_START,
                        872, 198, 6639, 610, 752, 419, 3405, IM_END, 21, IM_END]


def test_reasoning_can_be_context_only(tmp_path, tokenizer):
    path = write(tmp_path / "v1.jsonl", json.dumps(V1_RECORD) + "\n")
    [conv] = read(path, train_on_reasoning=False)
    ids, labels = tokens(tokenizer, conv)
    assert ids == template_ids(tokenizer, conv)
    learned = trained_ids(ids, labels)
    assert learned[:2] == encode(tokenizer, "4") + [IM_END]
    assert "<think>" not in tokenizer.decode(learned)


def test_parallel_tool_calls_and_a_run_of_tool_results(tmp_path, tokenizer):
    record = {"messages": [
        v1("user", 0.0, text("Weather in Paris and Rome?")),
        v1("assistant", 1.0, call("weather", city="Paris"), call("weather", city="Rome")),
        v1("tool", 0.0, text('{"c": 21}')), v1("tool", 0.0, text('{"c": 25}')),
        v1("assistant", 1.0, text("21 and 25.")),
    ], "tools": json.dumps([{"name": "weather", "parameters": {"type": "object"}}])}
    path = write(tmp_path / "tools.jsonl", json.dumps(record) + "\n")
    [conv] = read(path)
    assert [len(m.get("tool_calls", [])) for m in conv["messages"]] == [0, 2, 0, 0, 0]
    ids, labels = tokens(tokenizer, conv)
    assert ids == template_ids(tokenizer, conv)
    rendered = tokenizer.decode(ids)
    assert ("<|im_start|>user\n<tool_response>\n{\"c\": 21}\n</tool_response>\n<tool_response>\n{\"c\": 25}\n"
            "</tool_response><|im_end|>\n<|im_start|>assistant\n21 and 25.<|im_end|>") in rendered
    calls = ('<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
             '<tool_call>\n{"name": "weather", "arguments": {"city": "Rome"}}\n</tool_call>')
    assert trained_ids(ids, labels) == encode(tokenizer, calls) + [IM_END] + encode(tokenizer, "21 and 25.") + [IM_END]

    [everything] = read(path, train_on_prompt=True)  # loss_weight on every message: the data decides
    assert trained_ids(*tokens(tokenizer, everything)) == trained_ids(ids, labels)

    record["messages"][2]["loss_weight"] = record["messages"][3]["loss_weight"] = 1.0  # results trained too
    [conv] = read(write(tmp_path / "tools1.jsonl", json.dumps(record) + "\n"))
    ids, labels = tokens(tokenizer, conv)
    assert ids == template_ids(tokenizer, conv)
    results = ('<|im_start|>user\n<tool_response>\n{"c": 21}\n</tool_response>\n<tool_response>\n{"c": 25}\n'
               '</tool_response><|im_end|>\n<|im_start|>assistant\n')  # the whole unit, and the next prompt
    assert trained_ids(ids, labels) == encode(tokenizer, calls) + [IM_END, NEWLINE] + encode(tokenizer, results) + \
        encode(tokenizer, "21 and 25.") + [IM_END]


def test_sharegpt_parallel_calls_and_consecutive_observations(tmp_path, tokenizer):
    record = {"conversations": [
        {"from": "human", "value": "Paris and Rome?"},
        {"from": "function_call", "value": json.dumps([{"name": "weather", "arguments": {"city": "Paris"}},
                                                      {"name": "weather", "arguments": {"city": "Rome"}}])},
        {"from": "observation", "value": "21"}, {"from": "observation", "value": "25"},
        {"from": "gpt", "value": "21 and 25."}]}
    [conv] = read(write(tmp_path / "g.json", json.dumps([record])), "sharegpt")
    ids, labels = tokens(tokenizer, conv)
    assert ids == template_ids(tokenizer, conv)
    learned = tokenizer.decode(trained_ids(ids, labels))
    assert learned.endswith("</tool_call><|im_end|>21 and 25.<|im_end|>") and "tool_response" not in learned


def test_openai_tool_calls_with_two_calls(tmp_path, tokenizer):
    calls = [{"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": json.dumps({"x": i})}}
             for i in (1, 2)]
    record = {"messages": [{"role": "user", "content": "f twice"},
                           {"role": "assistant", "content": None, "tool_calls": calls},
                           {"role": "tool", "content": "1"}, {"role": "tool", "content": "2"},
                           {"role": "assistant", "content": "1, 2"}]}
    [conv] = read(write(tmp_path / "o.jsonl", json.dumps(record) + "\n"))
    ids, labels = tokens(tokenizer, conv)
    assert ids == template_ids(tokenizer, conv)
    assert tokenizer.decode(trained_ids(ids, labels)) == (
        '<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>\n'
        '<tool_call>\n{"name": "f", "arguments": {"x": 2}}\n</tool_call><|im_end|>1, 2<|im_end|>')


@pytest.mark.parametrize("message, expected", [
    (v1("user", 0.0, {"type": "image_url", "value": "a.png"}),
     r":1 message 0 content part 0: part type 'image_url' is not supported"),
    (v1("user", 0.0, {"type": "thinking", "value": "x"}),
     r":1 message 0 content part 0: unknown part type 'thinking'; expected one of text, reasoning, tool_call"),
    (v1("user", 0.5, text("x")), r":1 message 0: 'loss_weight' must be 0 or 1"),
    (v1("user", 0.0, {"type": "reasoning", "value": "x"}), r":1 message 0: reasoning and tool calls belong to"),
    (v1("assistant", 1.0, {"type": "tool_call", "value": "{oops"}),
     r":1 message 0 content part 0: a 'tool_call' part's value must be JSON"),
    (v1("user", 0.0, {"type": "text", "value": 3}), r"a 'text' part holds its text in 'value'"),
])
def test_bad_v1_messages_name_the_record_and_the_part(tmp_path, message, expected):
    path = write(tmp_path / "bad.jsonl", json.dumps({"messages": [message]}) + "\n")
    with pytest.raises(RecipeError, match=expected) as info:
        read(path)
    assert str(info.value).startswith(str(path))


def test_tool_results_of_one_turn_must_agree_on_loss_weight(tmp_path, tokenizer):
    record = {"messages": [v1("user", 0.0, text("q")), v1("assistant", 1.0, call("f"), call("f")),
                           v1("tool", 1.0, text("1")), v1("tool", 0.0, text("2")), v1("assistant", 1.0, text("a"))]}
    [conv] = read(write(tmp_path / "m.jsonl", json.dumps(record) + "\n"))
    with pytest.raises(RecipeError, match=r"m.jsonl:1: consecutive tool results are one turn .* same loss_weight"):
        tokens(tokenizer, conv)
