"""The document filters of the plugin contract (``register_filters`` in recipes.plugins.hookspecs): a
check each training document must pass to be kept, and what its factory learns about the source it
will judge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from pydantic import BaseModel

from recipes.plugins.no_options import NoOptions

DOCUMENT, CORPUS = "document", "corpus"  # the scopes a filter may have


@dataclass(frozen=True)
class FilterContext:
    """What a filter's ``make`` learns about the source whose documents it will judge."""

    stage_name: str
    source_name: str
    work_dir: Any  # pathlib.Path: a folder the filter may write to (spill files); removed afterwards
    cjk: Optional[bool] = None  # the source's expected script is CJK (True), not CJK (False), unknown (None)
    script: Optional[str] = None  # the source's ``script`` setting ("cjk", "latin") or None


@dataclass(frozen=True)
class DocumentFilter:
    """A check each training document must pass to be kept (a source's ``filters`` table names it:
    ``filters = {NAME = {option = value}}``; the name is the removal reason in every count).

    - ``make(options, context)`` is called once per source (``options``: an instance of ``options_model``,
      validated when the recipe is checked; ``context``: a ``FilterContext``) and returns
      ``check(text, place)``, which returns None to keep the document or a short detail saying why it
      goes (``"CJK share 0.12 < 0.30"``, ``"duplicate of corpus.jsonl:12"``). ``text`` is the document's
      text after the source's normalisation (NFKC and whitespace, unless ``normalize = "none"``), an SFT
      conversation's text being its messages' (``role: content`` lines); ``place`` is where it came
      from, ``"file:line"``, or ``""`` when unknown.
    - ``scope``: ``"document"`` judges each document alone and may run in the tokenizing worker
      processes (``make`` is then called in each worker: the check need not be picklable);
      ``"corpus"`` sees every document of the stage's training sources, in recipe order, in one
      process, and keeps state (dedup): keep the first occurrence.
    """

    name: str
    make: Callable[[BaseModel, FilterContext], Callable[[str, str], Optional[str]]]
    options_model: type[BaseModel] = NoOptions
    scope: str = DOCUMENT
    description: str = ""
