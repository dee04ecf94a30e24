"""The ``sharegpt`` format: a list of turns tagged by speaker, with tool calls and tool results.

Tags and columns are options with LLaMA-Factory's names and defaults (``conversations``, ``from`` /
``value``, ``human`` / ``gpt`` / ``observation`` / ``function_call`` / ``system``), so that its
``dataset_info.json`` entries map onto them one to one. A ``function_call`` turn (JSON: one call
``{"name", "arguments"}`` or a list of them) becomes an assistant turn with ``tool_calls``; an
``observation`` turn becomes a ``tool`` message. The chat template then renders them as the model
was trained to see them (Qwen2.5: ``<tool_call>`` in the assistant turn, ``<tool_response>`` in a
user turn, tool definitions in the system prompt).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from pydantic import Field

from recipes.api import ConversationOptions, RecipeError, conversation, convert_records, field, tool_call


class ShareGPTOptions(ConversationOptions):
    """Columns and tags, as LLaMA-Factory's dataset_info.json calls them."""

    messages: str = Field("conversations", description="The column holding the list of turns.")
    system: str = Field("system", description="The column holding an optional system prompt.")
    tools: str = Field("tools", description="The column holding optional tool definitions (a list or JSON text).")
    role_tag: str = Field("from", description="The key of a turn that names its speaker.")
    content_tag: str = Field("value", description="The key of a turn that holds its text.")
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    observation_tag: str = Field("observation", description="A tool's result.")
    function_tag: str = Field("function_call", description="The assistant calling tools (JSON).")
    system_tag: str = Field("system", description="A system prompt given as the first turn.")


def read_sharegpt(path: Path, options: ShareGPTOptions) -> Iterator[dict]:
    return convert_records(path, lambda where, record: _record(where, record, options))


def _record(where: str, record: dict, options: ShareGPTOptions) -> dict:
    turns = field(record, options.messages, where, kind=list, option="messages")
    messages = []
    system = field(record, options.system, where, required=False)
    if system:
        messages.append({"role": "system", "content": system})
    for index, turn in enumerate(turns):
        messages.append(_message(turn, options, f"{where} turn {index}"))
    return conversation(messages, options, record, where, options.tools)


def _message(turn, options: ShareGPTOptions, where: str) -> dict:
    if not isinstance(turn, dict):
        raise RecipeError(f"{where}: expected an object with {options.role_tag!r} and {options.content_tag!r}, "
                          f"got {type(turn).__name__}")
    tag = field(turn, options.role_tag, where, option="role_tag")
    content = field(turn, options.content_tag, where, option="content_tag")
    roles = {options.user_tag: "user", options.assistant_tag: "assistant", options.observation_tag: "tool",
             options.system_tag: "system"}
    if tag == options.function_tag:
        try:
            calls = json.loads(content)
        except json.JSONDecodeError as exc:
            raise RecipeError(f"{where}: a {tag!r} turn must hold JSON ({{\"name\", \"arguments\"}} or a list of "
                              f"them): {exc.msg} (column {exc.colno})") from exc
        calls = calls if isinstance(calls, list) else [calls]
        return {"role": "assistant", "content": "", "tool_calls": [tool_call(c, where) for c in calls]}
    if tag not in roles:
        known = ", ".join(repr(t) for t in [*roles, options.function_tag])
        raise RecipeError(f"{where}: unknown {options.role_tag!r} value {tag!r}; the tags are {known} "
                          "(set user_tag, assistant_tag, ... to this data's names)")
    return {"role": roles[tag], "content": content}
