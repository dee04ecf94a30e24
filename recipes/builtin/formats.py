"""Built-in data formats, registered as one plugin: ``text`` (documents), ``alpaca``, ``sharegpt`` and
``messages`` (conversations). Each lives in its own module with its options model.

Each record carries ``_where`` ("file:line" or "file[index]") so that the host's errors about its
content can point at it.
"""

from __future__ import annotations

from recipes.api import DataFormat, hookimpl
from recipes.builtin.alpaca import AlpacaOptions, read_alpaca
from recipes.builtin.messages import MessagesOptions, read_messages
from recipes.builtin.sharegpt import ShareGPTOptions, read_sharegpt
from recipes.builtin.text import TextOptions, read_text

TABLES = ".json, .jsonl, .csv or .parquet"


@hookimpl
def register_data_formats():
    return [
        DataFormat("text", "documents", read_text, TextOptions,
                   f"Raw text: .txt (a document per line or per file) or {TABLES} with a text column."),
        DataFormat("alpaca", "conversations", read_alpaca, AlpacaOptions,
                   f"instruction / input / output, optional system, history and tools ({TABLES})."),
        DataFormat("sharegpt", "conversations", read_sharegpt, ShareGPTOptions,
                   f"LLaMA-Factory's sharegpt: tagged turns, function calls and observations, tools ({TABLES})."),
        DataFormat("messages", "conversations", read_messages, MessagesOptions,
                   f"OpenAI style: {{\"messages\": [{{\"role\", \"content\"}}, ...]}}, tool calls, loss_weight "
                   f"({TABLES})."),
    ]
