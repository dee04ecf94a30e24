"""Built-in data formats: ``text`` (documents), ``alpaca`` and ``messages`` (conversations).

Each record may carry ``_where`` ("file:line" or "file[index]") so that the host's errors about
its content can point at it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from recipes.errors import Problem, RecipeError
from recipes.hookspecs import DataFormat, hookimpl


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


def read_json_records(path: Path) -> Iterator[tuple[str, dict]]:
    """Records of a .json file (an array of objects) or a .jsonl file, with where each came from."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecipeError(Problem(f"not valid JSON: {exc.msg} (column {exc.colno})",
                                          file=str(path), line=number)) from exc
            yield f"{path}:{number}", _object(record, f"{path}:{number}")
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecipeError(Problem(f"not valid JSON: {exc.msg} (column {exc.colno})",
                                  file=str(path), line=exc.lineno)) from exc
    if not isinstance(data, list):
        raise RecipeError(Problem("expected a JSON array of records (or use .jsonl, one record a line)",
                                  file=str(path)))
    for index, record in enumerate(data):
        yield f"{path}[{index}]", _object(record, f"{path}[{index}]")


def _object(record, where: str) -> dict:
    if not isinstance(record, dict):
        raise RecipeError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


def _field(record: dict, key: str, where: str, required: bool = True) -> Optional[str]:
    value = record.get(key)
    if value is None:
        if required:
            raise RecipeError(f"{where}: missing field {key!r} (fields here: {', '.join(record) or 'none'}); "
                              "rename it in the data or set the format's column option")
        return None
    if not isinstance(value, str):
        raise RecipeError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


# --- text -------------------------------------------------------------------------------------

class TextOptions(_Options):
    split: Literal["line", "file"] = Field(
        "line", description="For .txt files: one document per non-empty line, or one per file.")
    text_field: str = Field("text", description="For .json/.jsonl files: the field holding the text.")


def read_text(path: Path, options: TextOptions) -> Iterator[dict]:
    if path.suffix in (".json", ".jsonl"):
        for where, record in read_json_records(path):
            yield {"text": _field(record, options.text_field, where), "_where": where}
        return
    text = path.read_text(encoding="utf-8")
    if options.split == "file":
        if text.strip():
            yield {"text": text, "_where": str(path)}
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield {"text": line, "_where": f"{path}:{number}"}


# --- alpaca -----------------------------------------------------------------------------------

class AlpacaOptions(_Options):
    """Column names, as LLaMA-Factory's dataset_info.json calls them."""

    prompt: str = "instruction"
    query: str = "input"
    response: str = "output"
    system: str = "system"
    history: str = "history"


def read_alpaca(path: Path, options: AlpacaOptions) -> Iterator[dict]:
    for where, record in read_json_records(path):
        messages = []
        system = _field(record, options.system, where, required=False)
        if system:
            messages.append({"role": "system", "content": system})
        for turn in record.get(options.history) or []:
            if not (isinstance(turn, list) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
                raise RecipeError(f"{where}: each {options.history!r} entry must be [prompt, response]")
            messages += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
        prompt = _field(record, options.prompt, where)
        query = _field(record, options.query, where, required=False)
        user = f"{prompt}\n{query}" if query else prompt
        messages += [{"role": "user", "content": user},
                     {"role": "assistant", "content": _field(record, options.response, where)}]
        yield {"messages": messages, "_where": where}


# --- messages ---------------------------------------------------------------------------------

class MessagesOptions(_Options):
    messages_field: str = Field("messages", description="The field holding the list of messages.")


def read_messages(path: Path, options: MessagesOptions) -> Iterator[dict]:
    for where, record in read_json_records(path):
        messages = record.get(options.messages_field)
        if not isinstance(messages, list):
            raise RecipeError(f"{where}: expected a list in field {options.messages_field!r}")
        out = []
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str) \
                    or not isinstance(message.get("content"), str):
                raise RecipeError(f"{where}: message {index} needs string 'role' and 'content'")
            out.append({"role": message["role"], "content": message["content"]})
        yield {"messages": out, "_where": where}


@hookimpl
def register_data_formats():
    return [
        DataFormat("text", "documents", read_text, TextOptions,
                   "Raw text: .txt (a document per line or per file) or .json/.jsonl with a text field."),
        DataFormat("alpaca", "conversations", read_alpaca, AlpacaOptions,
                   "instruction / input / output, optional system and history (.json or .jsonl)."),
        DataFormat("messages", "conversations", read_messages, MessagesOptions,
                   "OpenAI style: {\"messages\": [{\"role\", \"content\"}, ...]} (.json or .jsonl)."),
    ]
