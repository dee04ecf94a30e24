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
  the stage's bad-record policy), ``bad_record`` (one malformed record or file: an error, or skipped
  and counted, as the stage's ``on_bad_record`` says), ``read_text_file``, ``field`` and ``json_field``
  (typed fields, named errors), ``RECORD_SUFFIXES``; for conversation formats ``ConversationOptions`` (the masking options
  every conversation format takes), ``conversation`` (builds a checked record) and ``tool_call``.
- ``hold_out(examples, val_size, seed, stage)``: (train, held out) as a stage's ``val_size`` splits.
- ``conversation_tokens``: one conversation's token ids and labels, chat-templated and masked as an
  SFT stage's are (for a stage kind's own data).
- Stage kinds: ``StageKind`` with the ``KindData`` its ``prepare`` receives, the ``KindTraining`` its
  ``build`` receives and the ``KindTrainer`` it returns; ``sequence_log_probs`` (each sequence's
  answer log-probability from the chunked loss path, never the full logits).
- Document filters: ``DocumentFilter`` (with the ``FilterContext`` its ``make`` receives).
- Cleaning outside ``recipes prepare`` (a pipeline on a cluster): ``stage_cleaning(recipe, stage)``
  (a ``StageCleaning``: the stage's training sources as ``CleaningSource``s, each with its files,
  format, options, cleaning and mix), ``document_checks(cleaning, work_dir)`` (a source's document
  checks, in the order prepare runs them), ``normalize_text`` (what the checks and exact dedup see)
  and ``bad_record_policy`` (the stage's ``on_bad_record`` around reading).
- ``file_sha256(path)``: a file's sha256 (hex), for a plugin checking what it downloaded.
- Benchmark scorers: ``BenchmarkScorer`` (with the ``BenchmarkRequest`` its ``score`` receives),
  ``benchmark_row`` (a row as the report reads it), and the built-in prompt's parts for a scorer that
  asks the same questions: ``question_text`` (question, lettered choices, cue), ``prompt_header``
  (the subject's header) and ``LETTER_PREFIX`` (what precedes an answer letter after the cue).
- Errors: ``RecipeError`` (one line per problem, exit code 2) and ``Problem``.
"""

from __future__ import annotations

from contextlib import contextmanager

from recipes.bad_records import bad_record
from recipes.benchmarks.evaluate import benchmark_row
from recipes.benchmarks.prompts import LETTER_PREFIX, prompt_header, question_text
from recipes.data.conversations import ConversationOptions, conversation, tool_call
from recipes.data.prepare import split as hold_out
from recipes.data.tokenization import IGNORE_INDEX, conversation_tokens
from recipes.data.records import RECORD_SUFFIXES, convert_records, field, json_field, read_table, read_text_file
from recipes.errors import Problem, RecipeError
from recipes.family import BundledModel, ModelFamily
from recipes.hashing import file_sha256
from recipes.planning.stage_cleaning import CleaningSource, StageCleaning, stage_cleaning
from recipes.plugins.hookspecs import (API_VERSION, BenchmarkRequest, BenchmarkScorer, CallbackPlugin, DataFormat,
                                       DocumentFilter, Exporter, ExportContext, FilterContext, KindData, KindTrainer,
                                       KindTraining, LossFunction, NoOptions, QuantizationBackend, RunContext,
                                       StageContext, StageKind, hookimpl)

__all__ = [
    "API_VERSION", "hookimpl",
    "DataFormat", "QuantizationBackend", "CallbackPlugin", "StageContext", "RunContext", "LossFunction", "Exporter", "ExportContext",
    "ModelFamily",
    "BundledModel", "NoOptions",
    "read_table", "read_text_file", "convert_records", "bad_record", "field", "json_field", "RECORD_SUFFIXES",
    "ConversationOptions", "conversation", "tool_call",
    "conversation_tokens", "IGNORE_INDEX", "hold_out",
    "StageKind", "KindData", "KindTraining", "KindTrainer", "sequence_log_probs",
    "BenchmarkScorer", "BenchmarkRequest", "benchmark_row", "question_text", "prompt_header", "LETTER_PREFIX",
    "DocumentFilter", "FilterContext",
    "StageCleaning", "CleaningSource", "stage_cleaning", "document_checks", "normalize_text", "bad_record_policy",
    "RecipeError", "Problem", "file_sha256",
]


def sequence_log_probs(model, input_ids, attention_mask, completion_mask, chunk_size: int = 1024,
                       compute_dtype=None):
    """(log-probabilities [batch], answer token counts [batch]) of each row: the sum over the positions
    where ``completion_mask`` is 1 of log p(token | the tokens before it), computed through the chunked
    loss path (the output layer applied ``chunk_size`` positions at a time, never the full logits),
    differentiable. ``compute_dtype``: the torch dtype of mixed-precision training (the output layer's
    matmuls run in it when the layer is fp32, as under QLoRA). Imports torch when called."""
    from recipes.training.chunked_loss import chunk_precision
    from recipes.training.sequence_logps import sequence_log_probs as compute

    with chunk_precision(input_ids.device.type, compute_dtype):
        return compute(model, input_ids, attention_mask, completion_mask, chunk_size)


def normalize_text(text: str) -> str:
    """The text a source's checks and exact dedup see (NFKC and whitespace), as ``recipes prepare`` makes it."""
    from recipes.data.normalize import normalize

    return normalize(text)


def document_checks(cleaning, work_dir) -> list:
    """(reason, check) of a source's document-scope checks (its filters, then the stage's built-in
    checks), in the order ``recipes prepare`` runs them; ``check(text, place)`` returns None to keep
    the document or a detail. ``work_dir``: a folder the filters may write to."""
    from dataclasses import replace

    from recipes.data.cleaning import document_checks as checks

    return checks(replace(cleaning, work_dir=work_dir))


@contextmanager
def bad_record_policy(on_bad_record: str, max_bad_records: float):
    """Around reading records: a malformed record raises (``"error"``) or is skipped and counted
    (``"skip"``, up to ``max_bad_records``); yields the count (``.count``, ``.first``, ``.check_share(n)``)."""
    from recipes.bad_records import BadRecords, policy

    with policy(BadRecords(on_bad_record == "skip", max_bad_records)) as bad:
        yield bad
