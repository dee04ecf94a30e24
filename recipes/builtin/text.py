"""The ``text`` format: raw documents for continued pre-training.

A .txt file (or any file that is not a table) is plain text: a document per non-empty line, or the
whole file as one document. A .json/.jsonl/.csv/.parquet file holds one document per record, in a
column named by ``text_field``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field

from recipes.api import RECORD_SUFFIXES, field, read_table, read_text_file


class TextOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    split: Literal["line", "file"] = Field(
        "line", description="For plain-text files: one document per non-empty line, or one per file.")
    text_field: str = Field(
        "text", description="For .json/.jsonl/.csv/.parquet files: the column holding the text.")


def read_text(path: Path, options: TextOptions) -> Iterator[dict]:
    path = Path(path)
    if path.suffix.lower() in RECORD_SUFFIXES:
        for where, record in read_table(path):
            yield {"text": field(record, options.text_field, where, option="text_field"), "_where": where}
        return
    text = read_text_file(path)
    if options.split == "file":
        if text.strip():
            yield {"text": text, "_where": str(path)}
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield {"text": line, "_where": f"{path}:{number}"}
