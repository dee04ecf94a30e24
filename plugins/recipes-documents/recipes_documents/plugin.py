"""The ``documents`` data format: the plugin's one hook."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field

from recipes.api import DataFormat, bad_record, hookimpl
from recipes_documents.convert import FIX, SUFFIXES, BadDocument, check_setup, look, suffix_of, to_markdown
from recipes_documents.sections import split_sections

REQUIRES_RECIPES_API = 1  # the version of recipes.api this plugin is written for


class DocumentsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    split: Literal["document", "section"] = Field(
        "document", description="A record per document, or per section (cut at its Markdown headings).")
    heading_level: int = Field(
        2, ge=1, le=6, description="With split = \"section\": a section starts at each heading of this level or "
                                   "above (1: '#' only, 2: '#' and '##', ...).")


def read_documents(path: Path, options: DocumentsOptions) -> Iterator[dict]:
    """The file's text as Markdown: one record, or one per section (``file#n``). A file that cannot be
    converted, or that holds no text, is a bad record: an error naming it, or skipped and counted."""
    path = Path(path)
    suffix = suffix_of(path)
    check_setup(path, suffix)
    try:
        look(path, suffix)
        text = to_markdown(path, suffix)
        if not text:
            raise BadDocument(path, "no text in it (a scanned PDF holds only images: run OCR on it first; "
                                    f"markitdown reads text layers only): {FIX}")
    except BadDocument as exc:
        bad_record(exc)
        return
    if options.split == "document":
        yield {"text": text, "_where": str(path)}
        return
    for number, section in enumerate(split_sections(text, options.heading_level), start=1):
        yield {"text": section, "_where": f"{path}#{number}"}


def check_document(path: Path, options: DocumentsOptions) -> None:
    """What `recipes validate` looks at instead of converting: the type, the converter's libraries
    installed, and what the file shows without a converter (empty, cut short, damaged zip)."""
    path = Path(path)
    suffix = suffix_of(path)
    check_setup(path, suffix)
    try:
        look(path, suffix)
    except BadDocument as exc:
        bad_record(exc)


@hookimpl
def register_data_formats():
    return [DataFormat("documents", "documents", read_documents, DocumentsOptions,
                       "PDF, DOCX, PPTX, XLSX, HTML, EPUB and Markdown files as pre-training text (Markdown, "
                       "through markitdown): a record per document, or per section.",
                       suffixes=SUFFIXES, check_file=check_document)]
