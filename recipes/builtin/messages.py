"""The ``messages`` format: OpenAI-style ``{"messages": [{"role", "content"}, ...]}`` records.

``content`` is a string or a list of text parts (``{"type": "text", "text"|"value": ...}``), joined
in order. Assistant turns may carry ``tool_calls`` (OpenAI's shape) and ``loss_weight`` (0: the turn
is context, not trained; 1: trained); ``tool`` messages carry results; a ``tools`` column defines
the tools.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from pydantic import Field

from recipes.data.conversations import ConversationOptions, conversation, tool_call
from recipes.errors import RecipeError
from recipes.data.records import convert_records, field

ROLES = ("system", "user", "assistant", "tool")


class MessagesOptions(ConversationOptions):
    messages_field: str = Field("messages", description="The column holding the list of messages.")
    tools_field: str = Field("tools", description="The column holding optional tool definitions.")


def read_messages(path: Path, options: MessagesOptions) -> Iterator[dict]:
    return convert_records(path, lambda where, record: _record(where, record, options))


def _record(where: str, record: dict, options: MessagesOptions) -> dict:
    raw = field(record, options.messages_field, where, kind=list, option="messages_field")
    messages = [_message(m, f"{where} message {i}") for i, m in enumerate(raw)]
    return conversation(messages, options, record, where, options.tools_field)


def _message(message, where: str) -> dict:
    if not isinstance(message, dict):
        raise RecipeError(f"{where}: expected an object with 'role' and 'content', got {type(message).__name__}")
    role = field(message, "role", where)
    if role not in ROLES:
        raise RecipeError(f"{where}: unknown role {role!r}; expected one of {', '.join(ROLES)}")
    calls = field(message, "tool_calls", where, required=False, kind=list)
    out = {"role": role, "content": _content(message, where, required=not calls)}
    if calls:
        out["tool_calls"] = [tool_call(c.get("function", c) if isinstance(c, dict) else c, where) for c in calls]
    weight = message.get("loss_weight")
    if weight is not None:
        if weight not in (0, 1) or isinstance(weight, bool):
            raise RecipeError(f"{where}: 'loss_weight' must be 0 or 1, got {weight!r}")
        if role != "assistant":
            raise RecipeError(f"{where}: 'loss_weight' is only for assistant messages (this one is {role!r}); "
                              "use the format option train_on_prompt to train on prompts")
        out["train"] = weight == 1
    return out


def _content(message: dict, where: str, required: bool) -> str:
    content = message.get("content")
    if content is None and not required:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            text = part.get("text", part.get("value")) if isinstance(part, dict) else None
            if not (isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(text, str)):
                raise RecipeError(f"{where}: content part {index} must be {{\"type\": \"text\", \"text\": ...}}; "
                                  f"got {part!r:.80} (only text is supported)")
            texts.append(text)
        return "".join(texts)
    if content is None:
        raise RecipeError(f"{where}: missing 'content'")
    raise RecipeError(f"{where}: 'content' must be a string or a list of text parts, got {type(content).__name__}")
