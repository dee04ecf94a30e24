"""The ``text`` format: raw documents for continued pre-training.

A .txt file (or any file that is not a table; compressed ones too: .gz, .bz2, .xz, .zst) is plain text: a document per non-empty line, or the
whole file as one document. A .json/.jsonl/.csv/.parquet file holds one document per record, in a
column named by ``text_field``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field

from recipes.api import RECORD_SUFFIXES, convert_records, field, read_text_file
from recipes.data.streams import data_suffix, text_lines


class TextOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    split: Literal["line", "file"] = Field(
        "line", description="For plain-text files: one document per non-empty line, or one per file.")
    text_field: str = Field(
        "text", description="For .json/.jsonl/.csv/.parquet files: the column holding the text.")


def read_text(path: Path, options: TextOptions) -> Iterator[dict]:
    path = Path(path)
    if data_suffix(path) in RECORD_SUFFIXES:
        def document(where: str, record: dict) -> dict:
            return {"text": field(record, options.text_field, where, option="text_field"), "_where": where}

        yield from convert_records(path, document)
        return
    if options.split == "file":  # one document: the file is the record
        text = read_text_file(path)
        if text.strip():
            yield {"text": text, "_where": str(path)}
        return
    for number, line in text_lines(path):  # streamed, a line at a time
        if line.strip():
            yield {"text": line, "_where": f"{path}:{number}"}
