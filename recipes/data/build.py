"""Preparing a token store: records streamed from the files, cut into chunks, cleaned and tokenized
in parallel (``workers`` processes, default: the available cores: normalisation, the document checks,
digests, tokens), then deduplicated in this process in recipe order (``recipes.data.removals``), each
chunk written as a shard as soon as it is settled. A shard already written by an interrupted or failed
preparation is kept and not redone (unless a corpus-scope filter must see its documents again).

One process builds a store (a file lock, so that several ranks, or several nodes sharing a cache
folder, never build the same one twice); the others poll for its ``store.json`` (no collective call,
so no collective timeout can end a long preparation).
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections import deque
from itertools import chain
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from recipes.data import batch_tokenize
from recipes.bad_records import BadRecords, policy, skipped
from recipes.data.store import finished_shard, write_json
from recipes.errors import Problem, RecipeError

CHUNK_RECORDS = 2000  # conversations per shard
CHUNK_CHARACTERS = 4 << 20  # text per pre-training shard (about 1M tokens)
POLL_SECONDS = 0.5

_WORKER: dict = {}  # what a worker process tokenizes with, set once by its initializer


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def read_chunks(sources, kind: str):
    """Chunks of records (about ``CHUNK_CHARACTERS`` of documents' text, or ``CHUNK_RECORDS``
    conversations) of every file of every source, in recipe order; a file that gives no record at all,
    none skipped either, is an error naming it (empty)."""
    chunk, size = [], 0
    for fmt, options, files in sources:
        for path in files:
            before, skipped_before = 0, skipped()
            for record in fmt.read(Path(path), options):
                before += 1
                chunk.append(record)
                size += len(record["text"]) if kind == "documents" else 1
                if size >= (CHUNK_CHARACTERS if kind == "documents" else CHUNK_RECORDS):
                    yield chunk
                    chunk, size = [], 0
            if not before and skipped() == skipped_before:  # skipped ones are counted, and bounded
                raise RecipeError(Problem("no records in this file (empty, or only blank lines); "
                                          "remove it from the data or fix it", file=str(path)))
    if chunk:
        yield chunk


def _init_worker(tokenizer, kind: str, settings: tuple, cleaning=None, texts: bool = False) -> None:
    _WORKER.update(tokenizer=tokenizer, kind=kind, settings=settings, cleaning=cleaning, texts=texts)


def tokenize_chunk(index: int, chunk: list, tokenizer=None, kind=None, settings=None, cleaning=None,
                   texts: bool = False):
    """Clean and tokenize one chunk (in a worker: its settings from ``_init_worker``); a ``Tokenized``."""
    from recipes.data.cleaning import document_checks, screen
    from recipes.data.removals import Tokenized

    if tokenizer is None:
        tokenizer, kind, settings = _WORKER["tokenizer"], _WORKER["kind"], _WORKER["settings"]
        cleaning, texts = _WORKER["cleaning"], _WORKER["texts"]
        if "checks" not in _WORKER:  # made once per worker process
            _WORKER["checks"] = document_checks(cleaning) if cleaning is not None else []
        checks = _WORKER["checks"]
    else:
        checks = document_checks(cleaning) if cleaning is not None else []
    screened = screen(chunk, kind, cleaning, checks)
    result = _tokens(screened.kept, tokenizer, kind, settings)
    result.records = len(chunk)  # every record read, the removed ones too
    removed = [record for *_, record in screened.removed]
    counted = _tokens(removed, tokenizer, kind, settings) if removed else None
    per_record = np.zeros(len(removed), np.int64)
    if counted is not None:
        per_record[counted.origin] = counted.lengths
    return Tokenized(index, result, np.asarray(screened.digests, np.uint64), screened.places,
                     screened.texts if texts else [],
                     [(*entry[:4], int(tokens)) for entry, tokens in zip(screened.removed, per_record)])


def _tokens(records: list, tokenizer, kind: str, settings: tuple):
    if kind == "documents":
        return batch_tokenize.documents([r["text"] for r in records], tokenizer, settings[0])
    return batch_tokenize.conversations(records, tokenizer, settings[0], settings[1])


@contextmanager
def locked(folder: Path):
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def wait_for(marker: Path, say) -> None:
    """Poll for ``marker`` (another process is preparing); no timeout: torchrun ends this process if
    the one preparing fails."""
    if marker.is_file():
        return
    say(f"data: waiting for another process to prepare {marker.parent.name[:12]}")
    while not marker.is_file():
        time.sleep(POLL_SECONDS)


def build_store(folder: Path, sources, kind: str, tokenizer, settings: tuple, bad: BadRecords, workers: int,
                progress, cleaning=None, seen=None, corpus: list = (), earlier: list = ()) -> dict:
    """Clean and tokenize ``sources`` into shards under ``folder`` and write ``store.json``; its content.
    ``settings``: (separator,) for documents, (cutoff_len, overlong) for conversations. ``cleaning``:
    the source's (None: kept whole, as evaluation sets are); ``seen``: the digests the stage's earlier
    sources kept (``recipes.data.dedup.SeenDigests``); ``corpus``: the corpus-scope checks;
    ``earlier``: the earlier sources' store folders (where a duplicate's original is looked for)."""
    from recipes.data.dedup import kept_digests
    from recipes.data.removals import Ledger, settle

    started = time.monotonic()
    metas, reused = [], 0
    pool, pending, width = None, deque(), 1
    ledger = Ledger()
    # a removed example's text (a prepared tokenizer without transformers decodes through its Rust one)
    decode = tokenizer.decode if hasattr(tokenizer, "decode") else tokenizer._tokenizer.decode
    preview = lambda ids: decode(np.asarray(ids[:100]).tolist(), skip_special_tokens=True)  # noqa: E731

    def collect(meta: dict) -> None:
        for message in meta["bad"]:
            bad.add(message)
        metas.append(meta)
        ledger.merge(meta)
        progress.advance(meta["records"], meta["tokens"])

    try:
        with policy(bad):
            chunks = read_chunks(sources, kind)
            ahead = [c for c in (next(chunks, None), next(chunks, None)) if c is not None]
            if len(ahead) > 1:  # one chunk only: not worth starting processes or a thread
                pool, width = _pool(workers, tokenizer, kind, settings, cleaning, bool(corpus))
            for index, chunk in enumerate(chain(ahead, chunks)):
                done = finished_shard(folder, index) if not corpus else None
                if done is not None:
                    reused += 1
                    if seen is not None:
                        for digests in kept_digests(folder, [done]):
                            seen.first_seen(np.asarray(digests))
                    collect(done)
                    continue
                if pool is None:
                    collect(settle(folder, tokenize_chunk(index, chunk, tokenizer, kind, settings, cleaning,
                                                          bool(corpus)), cleaning, seen, corpus, preview))
                else:
                    # a thread gets what to tokenize with; a process has its own
                    shared = (tokenizer, kind, settings, cleaning, bool(corpus)) if _threaded(pool) else ()
                    pending.append(pool.apply_async(tokenize_chunk, (index, chunk, *shared)))
                    while len(pending) > 2 * width:  # bounded: reading never runs far ahead
                        collect(settle(folder, pending.popleft().get(), cleaning, seen, corpus, preview))
                while pending and pending[0].ready():
                    collect(settle(folder, pending.popleft().get(), cleaning, seen, corpus, preview))
            while pending:
                collect(settle(folder, pending.popleft().get(), cleaning, seen, corpus, preview))
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    records = sum(m["records"] for m in metas) + bad.count - sum(len(m["bad"]) for m in metas)
    bad.check_share(records)
    info = {"kind": kind, "cutoff_len": settings[0] if kind == "conversations" else None,
            "shards": [{k: m[k] for k in ("index", "examples", "tokens")} for m in metas],
            "records": records, "tokens": sum(m["tokens"] for m in metas),
            "label_tokens": sum(m["label_tokens"] for m in metas),
            "truncated": sum(m["truncated"] for m in metas), "dropped": sum(m["dropped"] for m in metas),
            "examples": sum(m["examples"] for m in metas), "bad": bad.count, "bad_first": bad.first,
            "seconds": round(time.monotonic() - started, 2), "reused_shards": reused,
            "workers": workers if pool is not None else 1, "threads": pool is not None and _threaded(pool),
            **_removals(ledger, [*earlier, folder])}
    return info


def _removals(ledger, folders: list) -> dict:
    """The store's removals, each duplicate's example naming where its original was kept."""
    from recipes.data.removals import first_place

    for example in ledger.examples:
        if "digest" in example:
            place = first_place(int(example.pop("digest"), 16), folders)
            example["detail"] = f"duplicate of {place}" if place else "duplicate"
    return ledger.as_meta()


def cuda_initialized() -> bool:
    """Whether this process has a CUDA context (torch not even imported: no)."""
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def start_method(available: list[str], cuda_live: bool) -> str:
    """How the tokenizing workers start: fork (fast: the tokenizer is inherited) unless this process
    already has a CUDA context (a stage's peak-memory reset, torchrun's NCCL setup): forking a process
    with live CUDA and NCCL threads can deadlock the child, so then spawn."""
    return "fork" if "fork" in available and not cuda_live else "spawn"


def _threaded(pool) -> bool:
    from multiprocessing.pool import ThreadPool

    return isinstance(pool, ThreadPool)


def _pool(workers: int, tokenizer, kind: str, settings: tuple, cleaning=None, texts: bool = False):
    """(pool, its width). Documents through a direct Rust tokenizer: two threads of this process call
    it while this thread reads the next chunk; the call releases the GIL and spreads the batch over
    the tokenizer's own ``workers`` threads, and while one thread turns its encodings into arrays
    (holding the GIL) the other's batch keeps the tokenizer's threads busy. Measured on a 50 MB
    corpus, 2 cores: 33.5 CPU-seconds for the whole command, against 41.9 with two processes of one
    tokenizer thread each (the same batch costs a single-threaded tokenizer more CPU). Else
    ``workers`` processes, one tokenizer thread each (none for one worker), as for conversations,
    whose chat template renders in Python."""
    import multiprocessing
    from multiprocessing.pool import ThreadPool

    if kind == "documents" and batch_tokenize.backend(tokenizer) is not None and _tokenizer_threads():
        os.environ.setdefault("RAYON_NUM_THREADS", str(workers))  # read when the tokenizer first spreads a batch
        return ThreadPool(2), 2
    if workers == 1:
        return None, 1
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one thread per worker process
    context = multiprocessing.get_context(start_method(multiprocessing.get_all_start_methods(), cuda_initialized()))
    return context.Pool(workers, initializer=_init_worker, initargs=(tokenizer, kind, settings, cleaning, texts)), workers


def _tokenizer_threads() -> bool:
    """Whether the Rust tokenizer may use its thread pool here (``recipes run`` turns it off before
    its DataLoader and checkpoint processes fork)."""
    return os.environ.get("TOKENIZERS_PARALLELISM", "true").strip().lower() not in ("false", "0", "off", "no", "")


def finish(folder: Path, info: dict) -> None:
    write_json(folder / "store.json", info)
