"""Near-duplicate documents found with MinHash LSH (rensa), the first occurrence kept.

Each document becomes a set of shingles: character 5-grams where the text is mostly CJK (Chinese has no
spaces between words, and a word segmenter would be one more model to ship), word 5-grams otherwise.
rensa computes the document's MinHash signature; the LSH index (``recipes_near_dedup.bands``) looks up
the earlier documents sharing one of its ``bands`` bands of ``rows`` values. A candidate is a duplicate
only when the share of equal signature values, which estimates the Jaccard similarity of the two
shingle sets, reaches ``threshold``: so ``threshold`` means what it says, and the bands only decide
how many pairs get looked at. A document that is not a duplicate joins the index.

Memory per kept document: its band entries (8 bytes each, in a table at most 60% full), 2 bytes per
signature value kept for the verification (the low 16 bits: two different values agree there once in
65,536 draws, which moves the estimate by less than 0.0001), and about 12 bytes for its place.
``bench/near_dedup_memory.py`` measures the whole per million documents.
"""

from __future__ import annotations

import re
from array import array
from typing import Optional

import numpy as np

# Hiragana, Katakana, CJK unified ideographs (and extension A), compatibility ideographs, Hangul
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
SPACE = re.compile(r"\s+")
WORD = re.compile(r"\w+")
CJK_SHARE = 0.3  # above this share of CJK among the non-space characters, a text is shingled by characters
MIN_CANDIDATE_CHANCE = 0.9  # a pair exactly at the threshold becomes an LSH candidate at least this often
CHUNK_ROWS = 1 << 16  # signatures kept per numpy block (the index grows a block at a time)
SEED = 20240601


def cjk_share(text: str) -> float:
    """The share of CJK characters among the text's non-space characters."""
    letters = len(text) - len(SPACE.findall(text)) if text else 0
    if not letters:
        return 0.0
    return (len(text) - len(CJK.sub("", text))) / letters


def shingles(text: str, n: int = 5, unit: str = "auto") -> list[str]:
    """The text's shingles: character n-grams (spaces removed, case folded) where ``unit`` is "chars"
    or "auto" and the text is mostly CJK, else word n-grams (case folded, punctuation dropped). A text
    shorter than n units is one shingle."""
    folded = text.casefold()
    if unit == "chars" or (unit == "auto" and cjk_share(text) > CJK_SHARE):
        letters = SPACE.sub("", folded)
        return [letters[i:i + n] for i in range(max(len(letters) - n + 1, 1))] if letters else []
    words = WORD.findall(folded)
    if len(words) <= n:
        return [" ".join(words)] if words else []
    return [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]


def choose_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows): the most rows per band (the fewest candidates to verify) with which a pair of
    similarity ``threshold`` still becomes a candidate with probability ``MIN_CANDIDATE_CHANCE``; the
    signature then has bands x rows values (at most ``num_perm``)."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1 - (1 - threshold ** rows) ** bands >= MIN_CANDIDATE_CHANCE:
            return bands, rows
    return num_perm, 1


class Places:
    """Where each indexed document came from, compactly: "file:line" kept as a file number and a line
    number (about 12 bytes a document); any other place string as a whole."""

    def __init__(self):
        self._prefixes: dict[str, int] = {}
        self._names: list[str] = []
        self._prefix = array("I")
        self._number = array("q")

    def add(self, place: str) -> None:
        head, sep, tail = place.rpartition(":") if ":" in place else place.rpartition("#")
        if sep and tail.isdigit():
            prefix, number = head + sep, int(tail)
        else:
            prefix, number = place, -1
        index = self._prefixes.get(prefix)
        if index is None:
            index = self._prefixes[prefix] = len(self._names)
            self._names.append(prefix)
        self._prefix.append(index)
        self._number.append(number)

    def __getitem__(self, key: int) -> str:
        prefix, number = self._names[self._prefix[key]], self._number[key]
        return prefix if number < 0 else f"{prefix}{number}"

    def __len__(self) -> int:
        return len(self._number)


class NearDuplicates:
    """``check(text, place)``: None for a document unlike every earlier one (it joins the index), or a
    detail naming the earlier document it nearly duplicates and their estimated similarity."""

    def __init__(self, threshold: float = 0.5, num_perm: int = 128, bands: Optional[int] = None,
                 ngram: int = 5, unit: str = "auto"):
        from recipes_near_dedup.bands import BandIndex  # numpy only: rensa is imported for the signatures

        if bands:
            self.bands, self.rows = bands, num_perm // bands
        else:
            self.bands, self.rows = choose_bands(threshold, num_perm)
        self.perms = self.bands * self.rows
        self.threshold, self.ngram, self.unit = threshold, ngram, unit
        self.lsh = BandIndex(self.bands, self.rows)
        self.places = Places()
        self._blocks: list[np.ndarray] = []
        self.checked = 0

    def signature(self, text: str):
        """The text's rensa MinHash, or None for a text without a shingle (nothing to compare)."""
        from rensa import RMinHash

        tokens = shingles(text, self.ngram, self.unit)
        if not tokens:
            return None
        minhash = RMinHash(self.perms, SEED)
        minhash.update(tokens)
        return minhash

    def check(self, text: str, place: str = "") -> Optional[str]:
        self.checked += 1
        minhash = self.signature(text)
        if minhash is None:
            return None
        digest = np.asarray(minhash.digest(), dtype=np.uint32)
        low, bands = digest.astype(np.uint16), self.lsh.fingerprints_of(digest)
        best, best_key = 0.0, -1
        candidates, looked = self.lsh.lookup(bands)
        for key in candidates:
            similarity = float(np.count_nonzero(self._row(key) == low)) / self.perms
            if similarity > best:
                best, best_key = similarity, key
        if best >= self.threshold:
            return f"near duplicate ({best:.2f}) of {self.places[best_key] or f'document {best_key + 1}'}"
        self._add(bands, low, place, looked)
        return None

    def _row(self, key: int) -> np.ndarray:
        return self._blocks[key // CHUNK_ROWS][key % CHUNK_ROWS]

    def _add(self, bands: np.ndarray, low: np.ndarray, place: str, looked: tuple) -> None:
        key = len(self.places)
        if key % CHUNK_ROWS == 0:
            self._blocks.append(np.empty((CHUNK_ROWS, self.perms), dtype=np.uint16))
        self._blocks[-1][key % CHUNK_ROWS] = low
        self.lsh.add(bands, key, looked)
        self.places.add(place)

    def __len__(self) -> int:
        """Documents in the index (the ones kept)."""
        return len(self.places)
