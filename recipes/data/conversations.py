"""What every conversation format shares: the masking options and the per-message ``train`` flag.

A conversation record is ``{"messages": [...], "tools": [...]?, "_where": "file:line"?}``. Whether a
message's tokens get labels travels *with the message*, as ``"train": bool``, because some data sets
decide it per message (``loss_weight``) and the host's labelling code then needs no knowledge of any
format's options. A message without the flag follows the default: assistant turns are trained,
everything else is not (``message_trained``).

A format whose options model subclasses ``ConversationOptions`` calls ``apply_masking`` on each
record's messages to turn ``train_on_prompt`` / ``mask_history`` into flags. No torch here.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, model_validator

from recipes.errors import RecipeError
from recipes.data.records import json_field


class ConversationOptions(BaseModel):
    """Masking options shared by the conversation formats (LLaMA-Factory's names)."""

    model_config = ConfigDict(extra="forbid")

    train_on_prompt: bool = Field(
        False, description="Labels on every token (system, user, tool results and the template's own text), "
                           "not only on assistant turns.")
    mask_history: bool = Field(
        False, description="Train only the last assistant turn of each conversation; earlier turns are context.")

    @model_validator(mode="after")
    def _one_or_the_other(self):
        if self.train_on_prompt and self.mask_history:
            raise ValueError("train_on_prompt and mask_history contradict each other (labels on everything vs. "
                             "only on the last answer): set one")
        return self


def message_trained(message: dict) -> bool:
    """Whether a message's tokens get labels: its ``train`` flag, else only assistant turns."""
    return bool(message.get("train", message["role"] == "assistant"))


def apply_masking(messages: list[dict], options: ConversationOptions) -> list[dict]:
    """Set each message's ``train`` flag from the options. A flag the data set already gave a message
    (``loss_weight``, on any role) is kept, except that ``mask_history`` switches off every earlier
    answer; the options decide for the messages without one."""
    last_answer = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            trained = message.get("train", True)
            if options.mask_history and index != last_answer:
                trained = False
            message["train"] = trained
        else:
            message["train"] = message.get("train", options.train_on_prompt)
    return messages


def message_units(messages: list[dict]) -> list[tuple[int, int]]:
    """The messages as ``(first, end)`` index ranges that a chat template renders as units: each
    message alone, but a run of consecutive tool results together (ChatML puts them in one user turn
    and closes it with ``<|im_end|>`` only after the last), so prefixes are rendered at unit edges."""
    units: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if units and message["role"] == "tool" and messages[index - 1]["role"] == "tool":
            units[-1] = (units[-1][0], index + 1)
        else:
            units.append((index, index + 1))
    return units


def unit_trained(messages: list[dict], where: str) -> bool:
    """Whether a unit (see ``message_units``) gets labels; its messages must agree."""
    flags = {message_trained(m) for m in messages}
    if len(flags) > 1:
        raise RecipeError(f"{where}: consecutive tool results are one turn and are trained together; give them "
                          "the same loss_weight")
    return flags.pop()


def conversation(messages: list[dict], options: ConversationOptions, record: dict, where: str,
                 tools_column: str) -> dict:
    """The conversation record a format yields: masked messages, tools (from ``tools_column``) when the
    record defines any, and where it came from."""
    out = {"messages": apply_masking(messages, options), "_where": where}
    tools = as_tools(json_field(record, tools_column, where, list), where)
    if tools:
        out["tools"] = tools
    return out


def as_tools(value, where: str) -> list[dict] | None:
    """Tool definitions as chat templates take them: ``{"type": "function", "function": {...}}`` each.

    Data sets (LLaMA-Factory's glaive, OpenAI's ``functions``) often give the bare function schema
    ``{"name", "description", "parameters"}``; Qwen2.5's template prints each tool as given, and
    Qwen2.5 was trained on the wrapped OpenAI shape, so bare schemas are wrapped."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = [value]
    tools = []
    for index, tool in enumerate(value):
        if not isinstance(tool, dict) or not isinstance(tool.get("name", tool.get("function")), (str, dict)):
            raise RecipeError(f"{where}: tool {index} must be an object with a 'name' (a function schema)")
        tools.append(tool if "function" in tool else {"type": "function", "function": tool})
    return tools or None


def tool_call(value, where: str) -> dict:
    """One tool call ``{"name", "arguments": {...}}`` in the shape chat templates render; arguments given
    as JSON text are decoded, because the template serialises them itself."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise RecipeError(f"{where}: a function call must be an object with a string 'name' and 'arguments'")
    arguments = value.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise RecipeError(f"{where}: the arguments of function call {value['name']!r} are not valid JSON: "
                              f"{exc.msg}") from exc
    return {"type": "function", "function": {"name": value["name"], "arguments": arguments}}
