"""The public surface for plugins: everything a plugin package imports from recipes, and nothing else.

A plugin module says which version of this surface it was written for::

    REQUIRES_RECIPES_API = 1

and the host refuses it, with one line naming it, when it needs a newer one than ``API_VERSION``.
Within a version, names here only gain optional arguments and fields; anything else bumps it.
Internal modules (``recipes.data.*``, ``recipes.training.*``, ...) may change in any release.

- Markers: ``hookimpl`` (the hooks are documented in ``recipes.plugins.hookspecs`` and in
  ``docs/plugin_hooks.md``).
- Provider types the hooks return: ``DataFormat``, ``QuantizationBackend``, ``CallbackPlugin`` (with
  the ``StageContext`` its factory receives and the ``RunContext`` its ``finish`` receives),
  ``LossFunction``, ``Exporter`` (with the ``ExportContext`` its ``write`` receives), ``ModelFamily``
  (with ``BundledModel``);
  ``NoOptions`` for providers that take none.
- Record helpers for data formats: ``read_table`` (json/jsonl/csv/parquet rows with their
  ``file:line`` places, streamed, compressed files too), ``convert_records`` (rows -> records with
  the stage's bad-record policy), ``read_text_file``, ``field`` and ``json_field`` (typed fields, named
  errors), ``RECORD_SUFFIXES``; for conversation formats ``ConversationOptions`` (the masking options
  every conversation format takes), ``conversation`` (builds a checked record) and ``tool_call``.
- ``file_sha256(path)``: a file's sha256 (hex), for a plugin checking what it downloaded.
- Benchmark scorers: ``BenchmarkScorer`` (with the ``BenchmarkRequest`` its ``score`` receives),
  ``benchmark_row`` (a row as the report reads it), and the built-in prompt's parts for a scorer that
  asks the same questions: ``question_text`` (question, lettered choices, cue), ``prompt_header``
  (the subject's header) and ``LETTER_PREFIX`` (what precedes an answer letter after the cue).
- Errors: ``RecipeError`` (one line per problem, exit code 2) and ``Problem``.
"""

from __future__ import annotations

from recipes.benchmarks.evaluate import benchmark_row
from recipes.benchmarks.prompts import LETTER_PREFIX, prompt_header, question_text
from recipes.data.conversations import ConversationOptions, conversation, tool_call
from recipes.data.records import RECORD_SUFFIXES, convert_records, field, json_field, read_table, read_text_file
from recipes.errors import Problem, RecipeError
from recipes.family import BundledModel, ModelFamily
from recipes.hashing import file_sha256
from recipes.plugins.hookspecs import (API_VERSION, BenchmarkRequest, BenchmarkScorer, CallbackPlugin, DataFormat,
                                       Exporter, ExportContext, LossFunction, NoOptions, QuantizationBackend, RunContext,
                                       StageContext, hookimpl)

__all__ = [
    "API_VERSION", "hookimpl",
    "DataFormat", "QuantizationBackend", "CallbackPlugin", "StageContext", "RunContext", "LossFunction", "Exporter", "ExportContext",
    "ModelFamily",
    "BundledModel", "NoOptions",
    "read_table", "read_text_file", "convert_records", "field", "json_field", "RECORD_SUFFIXES",
    "ConversationOptions", "conversation", "tool_call",
    "BenchmarkScorer", "BenchmarkRequest", "benchmark_row", "question_text", "prompt_header", "LETTER_PREFIX",
    "RecipeError", "Problem", "file_sha256",
]
