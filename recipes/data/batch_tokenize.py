"""Tokenizing one chunk of records at a time, batched, into flat numpy arrays (a store shard).

The same tokens and labels as ``recipes.data.tokenization.pretrain_examples`` / ``sft_examples``
(the test compares them), computed without Python lists of Python ints:

- documents: one batched call of the Rust tokenizer per chunk; each document's ids and the separator
  go into one ``uint32`` array (the corpus stream; blocks are cut from it across the whole corpus later);
- conversations: each rendered with the chat template (prefix renders place the labels, as
  ``render_conversation`` does), all texts of the chunk tokenized in one batched call with offsets,
  labels placed by comparing the offset arrays with the spans in numpy. A conversation the template
  or the role order rejects is a bad record (``where: message``), decided on by the caller.

A fast tokenizer is called through its Rust tokenizer (``backend``), not through transformers'
``__call__``: the wrapper turns every encoding into Python lists of ids, attention masks and offsets and
a ``BatchEncoding``, a third of the preparation's CPU time on top of the tokenizer's own work. The ids
are the same (the wrapper calls the same ``encode_batch`` with the same settings; a test compares
them), and a tokenizer whose backend is set up differently (truncation, padding, split special tokens)
or a slow one goes through the wrapper as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recipes.errors import RecipeError


@dataclass
class Chunk:
    """One shard's worth of tokens: ``ids`` (uint32), per example its length and (SFT) a label mask."""

    ids: np.ndarray
    lengths: np.ndarray  # int32, per document (with its separator) or conversation
    mask: np.ndarray | None = None  # bool per token: has a label (SFT only)
    records: int = 0
    tokens: int = 0
    label_tokens: int = 0
    truncated: int = 0
    dropped: int = 0
    bad: list = field(default_factory=list)  # error messages of rejected records, in order
    origin: np.ndarray | None = None  # per example, the position of its record in the chunk's records


def backend(tokenizer):
    """The Rust tokenizer behind ``tokenizer`` when calling it directly gives the ids transformers'
    ``tokenizer(texts, add_special_tokens=False)`` gives, else None."""
    rust = getattr(tokenizer, "_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if rust is None or not hasattr(rust, "encode_batch_fast"):
        return None
    if rust.truncation is not None or rust.padding is not None:
        return None
    if rust.encode_special_tokens != bool(getattr(tokenizer, "split_special_tokens", False)):
        return None
    return rust


def document_ids(texts: list[str], tokenizer) -> list[list[int]]:
    """Each text's token ids, no special tokens added."""
    if not texts:
        return []
    rust = backend(tokenizer)
    if rust is None:
        return tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [encoding.ids for encoding in rust.encode_batch_fast(texts, add_special_tokens=False)]


def documents(texts: list[str], tokenizer, separator: int) -> Chunk:
    encoded = document_ids(texts, tokenizer)
    lengths = np.fromiter((len(ids) + 1 for ids in encoded), dtype=np.int32, count=len(encoded))
    ids = np.empty(int(lengths.sum()), dtype=np.uint32)
    position = 0
    for tokens in encoded:  # a C-level copy per document, no per-token Python work
        n = len(tokens)
        ids[position:position + n] = tokens
        ids[position + n] = separator
        position += n + 1
    return Chunk(ids, lengths, None, len(texts), len(ids), len(ids), origin=np.arange(len(texts)))


def conversations(records: list[dict], tokenizer, cutoff_len: int, overlong: str) -> Chunk:
    from recipes.data.tokenization import check_conversation, label_tokens, render_conversation

    texts, spans, bad, origins = [], [], [], []
    for position, record in enumerate(records):
        try:
            check_conversation(record["messages"], record.get("_where", "a record"))
            text, places = render_conversation(tokenizer, record["messages"], record.get("tools"))
        except RecipeError as exc:
            message = str(exc)
            where = record.get("_where")
            bad.append(message if not where or message.startswith(where) else f"{where}: {message}")
            continue
        texts.append(text)
        spans.append(places)
        origins.append(position)
    pieces_ids, pieces_mask = [], []
    chunk = Chunk(np.empty(0, np.uint32), np.empty(0, np.int32), None, len(records), bad=bad)
    if getattr(tokenizer, "is_fast", False) and texts:
        rust = backend(tokenizer)
        if rust is not None:
            pairs = ((e.ids, e.offsets) for e in rust.encode_batch(texts, add_special_tokens=False))
        else:
            encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
            pairs = zip(encoded["input_ids"], encoded["offset_mapping"])
        labelled = ((np.asarray(ids, np.uint32), _mask(np.asarray(offsets, np.int64).reshape(-1, 2), places))
                    for (ids, offsets), places in zip(pairs, spans))
    else:  # a slow tokenizer (no offsets): per piece, as label_tokens does
        labelled = ((np.asarray(ids, np.uint32), np.asarray(labels) != -100)
                    for ids, labels in (label_tokens(tokenizer, t, p) for t, p in zip(texts, spans)))
    lengths, kept = [], []
    for origin, (ids, mask) in zip(origins, labelled):
        if len(ids) > cutoff_len:
            if overlong == "drop":
                chunk.dropped += 1
                continue
            ids, mask = ids[:cutoff_len], mask[:cutoff_len]
            chunk.truncated += 1
        chunk.tokens += len(ids)  # as sft_examples counts: before an example without labels is dropped
        learned = int(mask.sum())
        if not learned:
            chunk.dropped += 1
            continue
        chunk.label_tokens += learned
        pieces_ids.append(ids)
        pieces_mask.append(mask)
        lengths.append(len(ids))
        kept.append(origin)
    if pieces_ids:
        chunk.ids, chunk.mask = np.concatenate(pieces_ids), np.concatenate(pieces_mask)
    else:
        chunk.mask = np.empty(0, bool)
    chunk.lengths, chunk.origin = np.asarray(lengths, np.int32), np.asarray(kept, np.int64)
    return chunk


def _mask(offsets: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """Per token: does it lie wholly inside one of the spans (and cover at least one character)?"""
    starts, ends = offsets[:, 0], offsets[:, 1]
    inside = np.zeros(len(offsets), bool)
    for start, end in spans:
        inside |= (starts >= start) & (ends <= end)
    return inside & (ends > starts)
