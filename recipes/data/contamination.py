"""Decontamination: a training document that shares a long n-gram with an evaluation set of the plan
or with a benchmark item is removed from training (reason ``contaminated``), so that no evaluation
number is earned by having read the answer.

The references are every ``eval_data`` source of every stage of the plan and every item (question and
choices, dev items included) of the recipe's benchmarks. A match is 13 consecutive words, or 50
consecutive CJK characters (Chinese has no spaces; 50 characters carry about what 13 English words
do): the shortest length at which two independent texts practically never agree, and long enough
that a shared phrase ("in accordance with the provisions of this law") does not count.

Both sides are read the same way: NFKC, case folded, then two streams: the words that are not CJK
(letters and digits; punctuation and spacing ignored) and the CJK characters alone (everything else
ignored, so that a copy with other punctuation or spacing still matches). Each n-gram becomes a 64-bit
hash (a polynomial over the characters, then over the words' hashes, modulo 2**64, mixed; computed
with numpy over the whole text at once). The index keeps the reference n-grams' hashes sorted
(8 bytes each) with the number of the set they came from (2 bytes): 10 bytes per reference n-gram,
whatever the size of the training corpus. A reference text shorter than one n-gram cannot be matched
and is counted (``short``) and said.

The index is read-only once built, so it may be used from worker processes (its arrays are inherited
or pickled); ``key`` names what it was built from (for the token store's key) without building it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

WORDS = 13  # words in a matching n-gram of non-CJK text
CJK_CHARS = 50  # CJK characters in a matching n-gram
_CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
ANY_CJK = re.compile(f"[{_CJK_RANGES}]")
NOT_CJK = re.compile(f"[^{_CJK_RANGES}]+")
NOT_WORD = re.compile(f"[\\W_{_CJK_RANGES}]+")  # what separates the non-CJK words
MASK = np.uint64(0xFFFFFFFFFFFFFFFF)
CHAR_BASE = 0x100000001B3  # odd: invertible modulo 2**64
WORD_BASE = 0x9E3779B97F4A7C15


class _Powers:
    """base**i and base**-i modulo 2**64 for i below a length that grows as texts need."""

    def __init__(self, base: int):
        self.base, self.inverse = base, pow(base, -1, 1 << 64)
        self.up = self.down = np.ones(1, dtype=np.uint64)

    def upto(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.up) < n:
            size = max(n, 2 * len(self.up))
            self.up, self.down = _power_table(self.base, size), _power_table(self.inverse, size)
        return self.up[:n], self.down[:n]


def _power_table(base: int, size: int) -> np.ndarray:
    table = np.empty(size, dtype=np.uint64)
    table[0] = 1
    with np.errstate(over="ignore"):
        if size > 1:
            table[1:] = np.cumprod(np.full(size - 1, base, dtype=np.uint64))
    return table


_CHAR_POWERS, _WORD_POWERS = _Powers(CHAR_BASE), _Powers(WORD_BASE)


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: spreads the polynomial hashes' bits (they go into a sorted array)."""
    with np.errstate(over="ignore"):
        values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return values ^ (values >> np.uint64(31))


def _windows(values: np.ndarray, n: int, powers: _Powers) -> np.ndarray:
    """The hash of every run of ``n`` consecutive values: sum of values[i + k] * base**k."""
    up, down = powers.upto(len(values) + 1)
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(values) + 1, dtype=np.uint64)
        np.cumsum(values * up[:len(values)], out=prefix[1:])
        return (prefix[n:] - prefix[:-n]) * down[:len(values) - n + 1]


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)


def ngram_hashes(text: str, words: int = WORDS, cjk_chars: int = CJK_CHARS,
                 want: tuple[bool, bool] = (True, True)) -> tuple[np.ndarray, np.ndarray]:
    """(the hashes of the text's word n-grams, of its CJK n-grams); either may be empty, and is when
    ``want`` (words, CJK) says it is not needed."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    empty = np.empty(0, dtype=np.uint64)
    cjk_hashes = empty
    if want[1] and ANY_CJK.search(folded):
        cjk = NOT_CJK.sub("", folded)
        if len(cjk) >= cjk_chars:
            cjk_hashes = _mix(_windows(_codepoints(cjk), cjk_chars, _CHAR_POWERS))
    latin = NOT_WORD.sub(" ", folded).strip() if want[0] else ""
    if latin.count(" ") + 1 < words:
        return empty, cjk_hashes
    points = _codepoints(" " + latin + " ")
    spaces = np.flatnonzero(points == 32)
    prefix = np.zeros(len(points) + 1, dtype=np.uint64)
    up, down = _CHAR_POWERS.upto(len(points) + 1)
    with np.errstate(over="ignore"):
        np.cumsum(points * up[:len(points)], out=prefix[1:])
        starts, ends = spaces[:-1] + 1, spaces[1:]
        word_hashes = _mix((prefix[ends] - prefix[starts]) * down[starts])
        # a different final mix than the CJK n-grams': the two kinds never collide by construction
        return _mix(_windows(word_hashes, words, _WORD_POWERS) ^ np.uint64(WORD_BASE)), cjk_hashes


@dataclass
class ReferenceIndex:
    """``match(text)``: None, or which reference set the text shares an n-gram with."""

    sets: list[str] = field(default_factory=list)  # e.g. "eval set 'qa' of stage 'sft'", "benchmark 'ceval'"
    hashes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))  # sorted, unique
    owners: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint16))  # set number per hash
    kinds: tuple[bool, bool] = (False, False)  # whether it holds word n-grams, CJK n-grams
    texts: int = 0  # reference texts read
    short: int = 0  # of which too short for one n-gram
    words: int = WORDS
    cjk_chars: int = CJK_CHARS

    def match(self, text: str, place: str = "") -> Optional[str]:
        """None, or which set ``text`` shares an n-gram with (``place``: unused; a document check's signature)."""
        if not len(self.hashes):
            return None
        for found, unit in zip(ngram_hashes(text, self.words, self.cjk_chars, self.kinds),
                               (f"{self.words} words", f"{self.cjk_chars} CJK characters")):
            if not len(found):
                continue
            where = np.searchsorted(self.hashes, found)
            np.minimum(where, len(self.hashes) - 1, out=where)
            hits = np.flatnonzero(self.hashes[where] == found)
            if len(hits):
                return f"shares {unit} with {self.sets[self.owners[where[hits[0]]]]}"
        return None

    def describe(self) -> str:
        """One line for the preparation's output."""
        if not self.sets:
            return "decontamination: no evaluation set or benchmark in the plan; nothing to check against"
        line = (f"decontamination: {len(self.hashes):,} n-grams of {self.texts:,} texts from "
                f"{len(self.sets)} reference set(s) ({', '.join(self.sets)})")
        if self.short:
            line += (f"; {self.short:,} text(s) shorter than {self.words} words and {self.cjk_chars} CJK characters "
                     "cannot be matched")
        return line


def build_index(references, words: int = WORDS, cjk_chars: int = CJK_CHARS) -> ReferenceIndex:
    """The index of ``references``: (set name, iterable of texts) pairs."""
    index = ReferenceIndex(words=words, cjk_chars=cjk_chars)
    hashes, owners = [], []
    for number, (name, texts) in enumerate(references):
        index.sets.append(name)
        for text in texts:
            index.texts += 1
            pair = ngram_hashes(text, words, cjk_chars)
            index.kinds = tuple(kind or bool(len(h)) for kind, h in zip(index.kinds, pair))
            found = [h for h in pair if len(h)]
            if not found:
                index.short += 1
                continue
            hashes += found
            owners += [np.full(len(h), number, dtype=np.uint16) for h in found]
    if hashes:
        merged, first = np.unique(np.concatenate(hashes), return_index=True)
        index.hashes, index.owners = merged, np.concatenate(owners)[first]
    return index


def record_text(record: dict) -> str:
    """What of a record is compared: a document's text, a conversation's messages' contents."""
    if "text" in record:
        return record["text"]
    return "\n".join(m["content"] for m in record.get("messages", ()) if isinstance(m.get("content"), str))


def _source_texts(source, bad_records: tuple = (False, 0.0)):
    """The texts of an evaluation source, its bad records under its stage's ``on_bad_record`` policy
    (``bad_records``: skip, limit), as the stage's own reading of it."""
    from recipes.bad_records import BadRecords, policy

    fmt, options, files = source
    with policy(BadRecords(*bad_records)):
        for path in files:
            for record in fmt.read(Path(path), options):
                yield record_text(record)


def _benchmark_texts(files):
    for subject in files.subjects.values():
        for item in subject.dev + subject.items:
            yield "\n".join((item.question,) + tuple(item.choices))


@dataclass(frozen=True)
class References:
    """What a stage's training data is decontaminated against: every ``eval_data`` source of the plan
    (``(stage name, Source)``) and every benchmark (``BenchmarkPlan``). ``make_plan`` gives the same to
    each stage that decontaminates."""

    eval_sets: tuple = ()  # (stage name, Source, (skip bad records, their limit))
    benchmarks: tuple = ()

    @classmethod
    def of(cls, stages, benchmarks) -> "References":
        return cls(tuple((stage.name, source, (stage.settings.on_bad_record == "skip", stage.settings.max_bad_records))
                         for stage in stages for source in stage.eval_sources), tuple(benchmarks))

    def __bool__(self) -> bool:
        return bool(self.eval_sets or self.benchmarks)

    def sets(self) -> tuple[list, list[str]]:
        """((set name, texts) per evaluation set and readable benchmark, read when iterated; notes on the
        benchmarks whose scorer reads its own task files, which cannot be read here)."""
        from recipes.benchmarks.layouts import read_benchmark
        from recipes.benchmarks.selection import scorer_of

        found = [(f"eval set {source.name!r} of stage {stage!r}", _source_texts(source, bad))
                 for stage, source, bad in self.eval_sets]
        notes = []
        for bench in self.benchmarks:
            scorer, options = scorer_of(bench)
            if not scorer.reads_files(options):
                notes.append(f"benchmark {bench.name!r}: its scorer {bench.scorer!r} reads its own task files; "
                             "training data is not checked against them")
                continue
            found.append((f"benchmark {bench.name!r}",
                          _benchmark_texts(read_benchmark(bench.path, bench.layout, bench.split))))
        return found, notes

    def key(self) -> str:
        """What the index is built from (files' contents, formats and options, the n-gram lengths):
        part of the token store's key, computed without reading the texts."""
        from recipes.hashing import digest, file_sha256

        sets = [{"stage": stage, "name": source.name, "format": source.format.name,
                 "options": source.options.model_dump(mode="json"), "files": [file_sha256(f) for f in source.files]}
                for stage, source, _ in self.eval_sets]
        benchmarks = []
        for bench in self.benchmarks:
            root = Path(bench.path)
            files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
            benchmarks.append({"name": bench.name, "layout": bench.layout, "split": bench.split,
                               "scorer": bench.scorer, "files": [[p.name if p == root else str(p.relative_to(root)),
                                                                  file_sha256(p)] for p in files]})
        return digest({"words": WORDS, "cjk_chars": CJK_CHARS, "sets": sets, "benchmarks": benchmarks})

    def index(self, say=None) -> ReferenceIndex:
        """The index (built once per process for the same files: every stage of a plan shares it)."""
        key = self.key()
        if key not in _BUILT:
            found, notes = self.sets()
            _BUILT.clear()  # one plan's index at a time
            _BUILT[key] = (build_index(found), notes)
        index, notes = _BUILT[key]
        if say is not None:
            for line in [index.describe()] + notes:
                say(f"data: {line}")
        return index


_BUILT: dict = {}


def decontaminated(stage, cleanings: list, say=None) -> list:
    """The stage's cleanings with the ``contaminated`` check added (``Cleaning.with_check``), when the
    stage decontaminates and the plan has something to check against; unchanged otherwise (so a plan
    without evaluation sets keeps its store keys)."""
    references = getattr(stage, "references", None)
    if not getattr(stage, "decontaminate", False) or not references or not any(c is not None for c in cleanings):
        return cleanings
    index = references.index(say)
    identity = f"decontaminate {references.key()}"
    return [c.with_check("contaminated", index.match, identity) if c is not None else None for c in cleanings]
