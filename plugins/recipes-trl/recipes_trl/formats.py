"""Preference data as the peers write it, read into two kinds of records:

- ``preferences`` (for ``kind = "dpo"``): ``{"prompt": [messages], "chosen": [messages], "rejected":
  [messages], "tools": [...] (optional), "_where": "file:line"}``; the prompt ends with a user (or tool)
  turn, chosen and rejected are the answers (one or more assistant turns);
- ``unpaired_preferences`` (for ``kind = "kto"``): ``{"prompt": [messages], "completion": [messages],
  "label": bool, ...}``: one answer marked desirable (true) or undesirable (false).

The formats:

- ``preference``: each record in whichever of these shapes it has: TRL's ``prompt``/``chosen``/
  ``rejected`` (strings, or message lists; without ``prompt``, chosen and rejected are whole
  conversations whose shared beginning is the prompt), LLaMA-Factory v1's ``chosen_messages``/
  ``rejected_messages`` (whole conversations), ms-swift's ``messages`` (the last assistant turn is the
  chosen answer) with ``rejected_response`` (a string or a message list) or ``rejected_messages``.
- ``sharegpt_preference`` and ``alpaca_preference``: LLaMA-Factory's ranking data sets, with its column
  and tag names as options (so a ``dataset_info.json`` entry maps onto them one to one).
- ``kto``: TRL's ``prompt``/``completion``/``label``, or ms-swift's ``messages`` (the last assistant turn
  is the completion) with ``label``.
- ``sharegpt_kto`` and ``alpaca_kto``: LLaMA-Factory's KTO data sets (a ``kto_tag`` column).

A bad record raises ``RecipeError`` naming ``file:line`` and the column (the stage's
``on_bad_record`` decides whether it stops the stage or is skipped and counted).
"""

from __future__ import annotations

import json
from typing import Iterator

from pydantic import BaseModel, ConfigDict, Field

from recipes.api import DataFormat, RecipeError, convert_records, json_field

ROLES = ("system", "user", "assistant", "tool")


class PreferenceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tools: str = Field("tools", description="The column holding optional tool definitions (a list or JSON text).")


class ShareGPTPreferenceOptions(BaseModel):
    """LLaMA-Factory's sharegpt ranking columns and tags (its dataset_info.json names)."""

    model_config = ConfigDict(extra="forbid")
    messages: str = Field("conversations", description="The column holding the turns before the answers.")
    chosen: str = Field("chosen", description="The column holding the preferred answer (a turn).")
    rejected: str = Field("rejected", description="The column holding the dispreferred answer (a turn).")
    system: str = "system"
    tools: str = "tools"
    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    observation_tag: str = "observation"
    function_tag: str = "function_call"
    system_tag: str = "system"


class AlpacaPreferenceOptions(BaseModel):
    """LLaMA-Factory's alpaca ranking columns."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = "instruction"
    query: str = "input"
    chosen: str = "chosen"
    rejected: str = "rejected"
    system: str = "system"
    history: str = "history"
    tools: str = "tools"


class KTOOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field("label", description="The column holding true (desirable) or false (undesirable).")
    tools: str = "tools"


class ShareGPTKTOOptions(ShareGPTPreferenceOptions):
    messages: str = Field("messages", description="The column holding the turns; the last is the completion.")
    chosen: str = Field("chosen", description="Not read: KTO data has one completion per example.")
    rejected: str = Field("rejected", description="Not read: KTO data has one completion per example.")
    kto_tag: str = Field("label", description="The column holding true (desirable) or false (undesirable).")


class AlpacaKTOOptions(AlpacaPreferenceOptions):
    response: str = Field("output", description="The column holding the completion.")
    kto_tag: str = Field("label", description="The column holding true (desirable) or false (undesirable).")


# ---- reading one record --------------------------------------------------------------------------

def _value(record: dict, key: str, where: str, required: bool = True):
    value = record.get(key)
    if value is None and required:
        raise RecipeError(f"{where}: missing column {key!r} (columns here: {', '.join(map(str, record)) or 'none'})")
    return value


def _messages(value, where: str, column: str) -> list[dict]:
    """A column holding a message list (OpenAI shape: role/content)."""
    if not isinstance(value, list) or not value:
        raise RecipeError(f"{where}: column {column!r} must be a non-empty list of messages, got {type(value).__name__}")
    out = []
    for index, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(message.get("content"), str):
            raise RecipeError(f"{where}: column {column!r} message {index}: expected {{\"role\": "
                              f"{'|'.join(ROLES)}, \"content\": a string}}, got {json.dumps(message)[:80]}")
        out.append({"role": message["role"], "content": message["content"]})
    return out


def _answer(value, where: str, column: str) -> list[dict]:
    """An answer: a string (one assistant turn) or a message list of assistant turns."""
    if isinstance(value, str):
        if not value.strip():
            raise RecipeError(f"{where}: column {column!r} is empty")
        return [{"role": "assistant", "content": value}]
    messages = _messages(value, where, column)
    if any(m["role"] != "assistant" for m in messages):
        raise RecipeError(f"{where}: column {column!r}: an answer holds assistant turns only")
    return messages


def _prompt(value, where: str, column: str) -> list[dict]:
    if isinstance(value, str):
        if not value.strip():
            raise RecipeError(f"{where}: column {column!r} is empty")
        return [{"role": "user", "content": value}]
    messages = _messages(value, where, column)
    if messages[-1]["role"] not in ("user", "tool"):
        raise RecipeError(f"{where}: column {column!r}: the prompt must end with a user (or tool) turn, "
                          f"not {messages[-1]['role']!r}")
    return messages


def _split_shared(chosen: list[dict], rejected: list[dict], where: str, columns: str) -> tuple[list, list, list]:
    """Whole conversations -> (their shared beginning, the chosen rest, the rejected rest)."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    while shared and chosen[shared - 1]["role"] == "assistant":  # the answers start after the last user turn
        shared -= 1
    prompt, good, bad = chosen[:shared], chosen[shared:], rejected[shared:]
    if not prompt or not good or not bad or any(m["role"] != "assistant" for m in good + bad):
        raise RecipeError(f"{where}: {columns}: expected two conversations that share their turns up to the last "
                          "user turn and differ in the assistant answers after it")
    return prompt, good, bad


def _pair(where: str, prompt: list, chosen: list, rejected: list, tools) -> dict:
    if chosen == rejected:
        raise RecipeError(f"{where}: the chosen and the rejected answer are the same")
    record = {"prompt": prompt, "chosen": chosen, "rejected": rejected, "_where": where}
    if tools:
        record["tools"] = tools
    return record


def _tools(record: dict, column: str, where: str):
    """Tool definitions (a list, one object, or JSON text of either), in the shape chat templates take."""
    value = json_field(record, column, where, object)
    if value is None:
        return None
    value = value if isinstance(value, list) else [value]
    return [tool if "function" in tool else {"type": "function", "function": tool} for tool in value] or None


def preference_record(where: str, record: dict, options: PreferenceOptions) -> dict:
    tools = _tools(record, options.tools, where)
    if "chosen_messages" in record or "rejected_messages" in record and "messages" not in record:  # LF v1
        chosen = _messages(_value(record, "chosen_messages", where), where, "chosen_messages")
        rejected = _messages(_value(record, "rejected_messages", where), where, "rejected_messages")
        return _pair(where, *_split_shared(chosen, rejected, where, "chosen_messages/rejected_messages"), tools)
    if "messages" in record:  # ms-swift: the last assistant turn is the chosen answer
        messages = _messages(record["messages"], where, "messages")
        if messages[-1]["role"] != "assistant":
            raise RecipeError(f"{where}: column 'messages' must end with the chosen assistant answer")
        prompt, chosen = messages[:-1], messages[-1:]
        if "rejected_messages" in record:
            rejected_all = _messages(record["rejected_messages"], where, "rejected_messages")
            return _pair(where, *_split_shared(messages, rejected_all, where, "messages/rejected_messages"), tools)
        rejected = _answer(_value(record, "rejected_response", where), where, "rejected_response")
        return _pair(where, _prompt(prompt, where, "messages"), chosen, rejected, tools)
    if "prompt" in record:  # TRL, explicit prompt
        return _pair(where, _prompt(record["prompt"], where, "prompt"),
                     _answer(_value(record, "chosen", where), where, "chosen"),
                     _answer(_value(record, "rejected", where), where, "rejected"), tools)
    if "chosen" in record and "rejected" in record:  # TRL, implicit prompt: two whole conversations
        chosen = _messages(record["chosen"], where, "chosen")
        rejected = _messages(record["rejected"], where, "rejected")
        return _pair(where, *_split_shared(chosen, rejected, where, "chosen/rejected"), tools)
    raise RecipeError(f"{where}: not a preference record: expected prompt/chosen/rejected (TRL), chosen_messages/"
                      "rejected_messages (LLaMA-Factory v1) or messages with rejected_response (ms-swift); columns "
                      f"here: {', '.join(map(str, record)) or 'none'}")


def _sharegpt_turn(turn, options, where: str) -> dict:
    if not isinstance(turn, dict):
        raise RecipeError(f"{where}: expected a turn object with {options.role_tag!r} and {options.content_tag!r}")
    tag, content = turn.get(options.role_tag), turn.get(options.content_tag)
    roles = {options.user_tag: "user", options.assistant_tag: "assistant", options.observation_tag: "tool",
             options.system_tag: "system", options.function_tag: "assistant"}
    if tag not in roles:
        raise RecipeError(f"{where}: unknown {options.role_tag!r} value {tag!r}; the tags are "
                          f"{', '.join(repr(t) for t in roles)} (set user_tag, assistant_tag, ... to this data's names)")
    if not isinstance(content, str):
        raise RecipeError(f"{where}: {options.content_tag!r} must be a string")
    return {"role": roles[tag], "content": content}


def _sharegpt_prompt(record: dict, options, where: str) -> list[dict]:
    turns = _value(record, options.messages, where)
    if not isinstance(turns, list) or not turns:
        raise RecipeError(f"{where}: column {options.messages!r} must be a non-empty list of turns")
    prompt = [{"role": "system", "content": record[options.system]}] if record.get(options.system) else []
    prompt += [_sharegpt_turn(turn, options, f"{where} turn {i}") for i, turn in enumerate(turns)]
    return prompt


def _sharegpt_answer(value, options, where: str, column: str) -> list[dict]:
    if isinstance(value, str):
        return _answer(value, where, column)
    turns = value if isinstance(value, list) else [value]
    answer = [_sharegpt_turn(turn, options, f"{where} column {column!r}") for turn in turns]
    if any(m["role"] != "assistant" for m in answer):
        raise RecipeError(f"{where}: column {column!r}: an answer is an {options.assistant_tag!r} turn")
    return answer


def sharegpt_preference_record(where: str, record: dict, options: ShareGPTPreferenceOptions) -> dict:
    prompt = _sharegpt_prompt(record, options, where)
    if prompt[-1]["role"] not in ("user", "tool"):
        raise RecipeError(f"{where}: column {options.messages!r} must end with a {options.user_tag!r} turn (the "
                          "answers are in the chosen and rejected columns)")
    return _pair(where, prompt,
                 _sharegpt_answer(_value(record, options.chosen, where), options, where, options.chosen),
                 _sharegpt_answer(_value(record, options.rejected, where), options, where, options.rejected),
                 _tools(record, options.tools, where))


def _alpaca_prompt(record: dict, options, where: str) -> list[dict]:
    prompt = [{"role": "system", "content": record[options.system]}] if record.get(options.system) else []
    for turn in record.get(options.history) or []:
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
            raise RecipeError(f"{where}: column {options.history!r}: each entry must be [instruction, answer]")
        prompt += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
    instruction = _value(record, options.prompt, where)
    if not isinstance(instruction, str):
        raise RecipeError(f"{where}: column {options.prompt!r} must be a string")
    query = record.get(options.query)
    return prompt + [{"role": "user", "content": f"{instruction}\n{query}" if query else instruction}]


def alpaca_preference_record(where: str, record: dict, options: AlpacaPreferenceOptions) -> dict:
    return _pair(where, _alpaca_prompt(record, options, where),
                 _answer(_value(record, options.chosen, where), where, options.chosen),
                 _answer(_value(record, options.rejected, where), where, options.rejected),
                 _tools(record, options.tools, where))


def _label(record: dict, column: str, where: str) -> bool:
    value = _value(record, column, where)
    if not isinstance(value, bool):
        raise RecipeError(f"{where}: column {column!r} must be true (desirable) or false (undesirable), got {value!r}")
    return value


def _unpaired(where: str, prompt: list, completion: list, label: bool, tools) -> dict:
    record = {"prompt": prompt, "completion": completion, "label": label, "_where": where}
    if tools:
        record["tools"] = tools
    return record


def kto_record(where: str, record: dict, options: KTOOptions) -> dict:
    tools = _tools(record, options.tools, where)
    label = _label(record, options.label, where)
    if "messages" in record and "completion" not in record:  # ms-swift
        messages = _messages(record["messages"], where, "messages")
        if messages[-1]["role"] != "assistant":
            raise RecipeError(f"{where}: column 'messages' must end with the assistant answer being labelled")
        return _unpaired(where, _prompt(messages[:-1], where, "messages"), messages[-1:], label, tools)
    return _unpaired(where, _prompt(_value(record, "prompt", where), where, "prompt"),
                     _answer(_value(record, "completion", where), where, "completion"), label, tools)


def sharegpt_kto_record(where: str, record: dict, options: ShareGPTKTOOptions) -> dict:
    turns = _sharegpt_prompt(record, options, where)
    if turns[-1]["role"] != "assistant" or len(turns) < 2:
        raise RecipeError(f"{where}: column {options.messages!r} must end with the {options.assistant_tag!r} turn "
                          "being labelled")
    return _unpaired(where, turns[:-1], turns[-1:], _label(record, options.kto_tag, where),
                     _tools(record, options.tools, where))


def alpaca_kto_record(where: str, record: dict, options: AlpacaKTOOptions) -> dict:
    return _unpaired(where, _alpaca_prompt(record, options, where),
                     _answer(_value(record, options.response, where), where, options.response),
                     _label(record, options.kto_tag, where), _tools(record, options.tools, where))


def _reader(convert):
    def read(path, options) -> Iterator[dict]:
        return convert_records(path, lambda where, record: convert(where, record, options))

    return read


FORMATS = [
    DataFormat("preference", "preferences", _reader(preference_record), PreferenceOptions,
               "preference pairs: TRL prompt/chosen/rejected, LLaMA-Factory v1 chosen_messages/rejected_messages, "
               "ms-swift messages + rejected_response"),
    DataFormat("sharegpt_preference", "preferences", _reader(sharegpt_preference_record), ShareGPTPreferenceOptions,
               "LLaMA-Factory sharegpt ranking data (conversations + chosen/rejected turns)"),
    DataFormat("alpaca_preference", "preferences", _reader(alpaca_preference_record), AlpacaPreferenceOptions,
               "LLaMA-Factory alpaca ranking data (instruction/input + chosen/rejected)"),
    DataFormat("kto", "unpaired_preferences", _reader(kto_record), KTOOptions,
               "KTO examples: TRL prompt/completion/label, ms-swift messages + label"),
    DataFormat("sharegpt_kto", "unpaired_preferences", _reader(sharegpt_kto_record), ShareGPTKTOOptions,
               "LLaMA-Factory sharegpt KTO data (messages + kto_tag)"),
    DataFormat("alpaca_kto", "unpaired_preferences", _reader(alpaca_kto_record), AlpacaKTOOptions,
               "LLaMA-Factory alpaca KTO data (instruction/input/output + kto_tag)"),
]
