"""The ``messages`` format: OpenAI-style ``{"messages": [{"role", "content"}, ...]}`` records, and
LLaMA-Factory's v1 form of them.

``content`` is a string or a list of typed parts, each holding its text in ``value`` (v1) or ``text``
(OpenAI): ``text`` parts are joined in order; ``reasoning`` parts are the model's thinking, rendered
as Qwen3 renders it (``<think>\\n...\\n</think>\\n\\n`` before the answer) and trained with the answer
unless ``train_on_reasoning = false``; ``tool_call`` parts (v1: JSON text ``{"name", "arguments"}``)
are the assistant's tool calls, like OpenAI's ``tool_calls`` list. Any message may carry
``loss_weight`` (0: not trained; 1: trained; v1 writes one on every message); ``tool`` messages carry
results; a ``tools`` column (a list, or JSON text of one) defines the tools. Other part types (images,
audio, ...) are refused, naming the record and the type.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from pydantic import Field

from recipes.api import ConversationOptions, RecipeError, conversation, convert_records, field, tool_call

ROLES = ("system", "user", "assistant", "tool")
PART_TYPES = ("text", "reasoning", "tool_call")
MEDIA_PARTS = ("image_url", "video_url", "audio_url", "image", "video", "audio", "input_audio")


class MessagesOptions(ConversationOptions):
    messages_field: str = Field("messages", description="The column holding the list of messages.")
    tools_field: str = Field("tools", description="The column holding optional tool definitions.")
    train_on_reasoning: bool = Field(
        True, description="Train on an assistant turn's reasoning parts (its <think> block) with its answer; "
                          "false: the thinking is context, only the answer after it is trained.")


def read_messages(path: Path, options: MessagesOptions) -> Iterator[dict]:
    return convert_records(path, lambda where, record: _record(where, record, options))


def _record(where: str, record: dict, options: MessagesOptions) -> dict:
    raw = field(record, options.messages_field, where, kind=list, option="messages_field")
    messages = [_message(m, f"{where} message {i}", options) for i, m in enumerate(raw)]
    return conversation(messages, options, record, where, options.tools_field)


def _message(message, where: str, options: MessagesOptions) -> dict:
    if not isinstance(message, dict):
        raise RecipeError(f"{where}: expected an object with 'role' and 'content', got {type(message).__name__}")
    role = field(message, "role", where)
    if role not in ROLES:
        raise RecipeError(f"{where}: unknown role {role!r}; expected one of {', '.join(ROLES)}")
    calls = field(message, "tool_calls", where, required=False, kind=list) or []
    calls = [tool_call(c.get("function", c) if isinstance(c, dict) else c, where) for c in calls]
    text, reasoning, part_calls = _content(message, where, required=not calls)
    calls += part_calls
    if (reasoning or calls) and role != "assistant":
        raise RecipeError(f"{where}: reasoning and tool calls belong to assistant messages (this one is {role!r})")
    out = {"role": role, "content": text}
    if reasoning:  # as Qwen3's template renders reasoning_content
        think = f"<think>\n{reasoning.strip(chr(10))}\n</think>\n\n"
        out["content"] = think + text.lstrip("\n")
        if not options.train_on_reasoning:
            out["context_prefix"] = think  # rendered, not trained (recipes.data.tokenization)
    if calls:
        out["tool_calls"] = calls
    weight = message.get("loss_weight")
    if weight is not None:
        if weight not in (0, 1) or isinstance(weight, bool):
            raise RecipeError(f"{where}: 'loss_weight' must be 0 or 1 (0: not trained, 1: trained), got {weight!r}")
        out["train"] = weight == 1
    return out


def _content(message: dict, where: str, required: bool) -> tuple[str, str, list[dict]]:
    """(text, reasoning, tool calls) of a message's content: a string or a list of typed parts."""
    content = message.get("content")
    if content is None and not required:
        return "", "", []
    if isinstance(content, str):
        return content, "", []
    if content is None:
        raise RecipeError(f"{where}: missing 'content'")
    if not isinstance(content, list):
        raise RecipeError(f"{where}: 'content' must be a string or a list of typed parts, got "
                          f"{type(content).__name__}")
    texts, reasoning, calls = [], [], []
    for index, part in enumerate(content):
        kind, value = _part(part, f"{where} content part {index}")
        if kind == "tool_call":
            calls.append(tool_call(_call_value(value, where, index), f"{where} content part {index}"))
        else:
            (texts if kind == "text" else reasoning).append(value)
    return "".join(texts), "".join(reasoning), calls


def _part(part, where: str) -> tuple[str, object]:
    if not isinstance(part, dict):
        raise RecipeError(f"{where}: expected an object such as {{\"type\": \"text\", \"value\": ...}}, "
                          f"got {type(part).__name__}")
    kind = part.get("type", "text")
    if kind in MEDIA_PARTS:
        raise RecipeError(f"{where}: part type {kind!r} is not supported: recipes trains text models on text")
    if kind not in PART_TYPES:
        raise RecipeError(f"{where}: unknown part type {kind!r}; expected one of {', '.join(PART_TYPES)}")
    value = part.get("value", part.get("text"))
    if kind != "tool_call" and not isinstance(value, str):
        raise RecipeError(f"{where}: a {kind!r} part holds its text in 'value' (or 'text'), a string")
    return kind, value


def _call_value(value, where: str, index: int):
    """A v1 ``tool_call`` part's value: JSON text of ``{"name", "arguments"}`` (or that object)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise RecipeError(f"{where} content part {index}: a 'tool_call' part's value must be JSON "
                              f"{{\"name\", \"arguments\"}}: {exc.msg} (column {exc.colno})") from exc
    return value
