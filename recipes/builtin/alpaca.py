"""The ``alpaca`` format: instruction / input / output records, optional system, history and tools.

Column names are options, with LLaMA-Factory's names (``prompt``, ``query``, ``response``, ``system``,
``history``, ``tools``), so that an entry of its ``dataset_info.json`` maps onto them one to one. The
user turn is the instruction, then a newline and the input when there is one (as LLaMA-Factory does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from pydantic import Field

from recipes.api import ConversationOptions, RecipeError, conversation, convert_records, field


class AlpacaOptions(ConversationOptions):
    """Column names, as LLaMA-Factory's dataset_info.json calls them."""

    prompt: str = Field("instruction", description="The column holding the instruction.")
    query: str = Field("input", description="The column holding the optional input, appended to the instruction.")
    response: str = Field("output", description="The column holding the answer.")
    system: str = Field("system", description="The column holding an optional system prompt.")
    history: str = Field("history", description="The column holding optional earlier [instruction, answer] pairs.")
    tools: str = Field("tools", description="The column holding optional tool definitions (a list or JSON text).")


def read_alpaca(path: Path, options: AlpacaOptions) -> Iterator[dict]:
    return convert_records(path, lambda where, record: _record(where, record, options))


def _record(where: str, record: dict, options: AlpacaOptions) -> dict:
    messages = []
    system = field(record, options.system, where, required=False)
    if system:
        messages.append({"role": "system", "content": system})
    for turn in field(record, options.history, where, required=False, kind=list) or []:
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
            raise RecipeError(f"{where}: column {options.history!r}: each entry must be a pair "
                              f"[instruction, answer] of strings, got {turn!r:.60}")
        messages += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
    prompt = field(record, options.prompt, where, option="prompt")
    query = field(record, options.query, where, required=False)
    messages += [{"role": "user", "content": f"{prompt}\n{query}" if query else prompt},
                 {"role": "assistant", "content": field(record, options.response, where, option="response")}]
    return conversation(messages, options, record, where, options.tools)
