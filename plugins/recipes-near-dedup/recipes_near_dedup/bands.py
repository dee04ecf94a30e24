"""The LSH index of near dedup: for each band of a kept document's MinHash signature, the band's
fingerprint and the document's number, in one open-addressing table held in two numpy arrays.

rensa's own ``RMinHashLSH`` keeps, per band and per document, a hash-map entry, a growable vector and
the key's list of band hashes: about 3.4 GB per million documents at 42 bands (measured by
``bench/near_dedup_memory.py``). Here an entry is 8 bytes (a 32-bit fingerprint and a 32-bit document
number) in buckets of 8 entries, the table doubled when it is 60% full: 13 to 27 bytes per band and
document. The bucket is the fingerprint's low bits (so the table grows without the full hashes); an
entry finding its bucket full goes to a small overflow dictionary. A fingerprint match is only a
candidate: the caller verifies it against the documents' signatures, so a chance match
of two fingerprints costs one comparison and never removes a document. Each bucket keeps the first
document that filled it (the first occurrence is what dedup keeps).

Lookups and inserts are vectorised over a document's bands: a few numpy calls per document.
"""

from __future__ import annotations

import numpy as np

MAX_LOAD = 0.6
WIDTH = 8  # entries per bucket
GROW_BATCH = 1 << 16  # entries moved at a time when the table doubles
_ODD = np.uint64(0xBF58476D1CE4E5B9)


class BandIndex:
    """``fingerprints_of(digest)``: a signature's band fingerprints; ``candidates(fingerprints)``: the
    numbers of earlier documents sharing one; ``add(fingerprints, number)``: index a kept document."""

    def __init__(self, bands: int, rows: int, buckets: int = 1 << 12):
        self.bands, self.rows = bands, rows
        rng = np.random.default_rng(bands * 1000 + rows)
        self._weights = rng.integers(1, 1 << 63, size=rows, dtype=np.uint64) | np.uint64(1)  # odd
        self._salts = rng.integers(1, 1 << 63, size=bands, dtype=np.uint64)
        self.overflow: dict[int, int] = {}
        self._allocate(buckets)
        self.count = 0

    def _allocate(self, buckets: int) -> None:
        self.fingerprints = np.zeros((buckets, WIDTH), dtype=np.uint32)  # 0: an empty entry
        self.numbers = np.zeros((buckets, WIDTH), dtype=np.uint32)
        self.mask = buckets - 1

    def fingerprints_of(self, digest: np.ndarray) -> np.ndarray:
        """32-bit fingerprints of the signature's bands (never 0, which marks an empty entry): each band's
        rows weighted by odd 64-bit numbers, summed, salted per band, multiplied by an odd constant
        and the top 32 bits taken (multiplicative hashing)."""
        rows = digest[:self.bands * self.rows].astype(np.uint64).reshape(self.bands, self.rows)
        with np.errstate(over="ignore"):
            hashes = ((rows @ self._weights) ^ self._salts) * _ODD
        return np.maximum((hashes >> np.uint64(32)).astype(np.uint32), np.uint32(1))

    def candidates(self, fingerprints: np.ndarray) -> list[int]:
        """The numbers of the documents in the buckets of these band fingerprints (unique)."""
        return self.lookup(fingerprints)[0]

    def lookup(self, fingerprints: np.ndarray) -> tuple[list[int], tuple]:
        """(``candidates``, what ``add`` can reuse if the document is then indexed)."""
        buckets = fingerprints.astype(np.int64) & self.mask
        rows = self.fingerprints[buckets]
        hit = rows == fingerprints[:, None]
        found = set()
        if hit.any():
            where, column = np.nonzero(hit)
            found.update(self.numbers[buckets[where], column].tolist())
        if self.overflow:
            found.update(n for n in map(self.overflow.get, fingerprints.tolist()) if n is not None)
        return sorted(found), (self.mask, buckets, rows, hit)

    def add(self, fingerprints: np.ndarray, number: int, looked: tuple | None = None) -> None:
        """Index a document's band fingerprints (``looked``: its ``lookup``'s second value, if any)."""
        if self.count + len(fingerprints) > MAX_LOAD * self.fingerprints.size:
            self._grow()
        if looked is None or looked[0] != self.mask:  # not looked up, or the table has grown since
            looked = self.lookup(fingerprints)[1]
        _, buckets, rows, hit = looked
        new = ~hit.any(axis=1)
        empty = rows == 0
        if not self.overflow and empty[new].any(axis=1).all() and len(set(buckets[new].tolist())) == new.sum():
            # the common case: each new band has room in a bucket of its own: one write
            columns = empty.argmax(axis=1)
            self.fingerprints[buckets[new], columns[new]] = fingerprints[new]
            self.numbers[buckets[new], columns[new]] = number
            self.count += int(new.sum())
            return
        self._insert(fingerprints, np.full(len(fingerprints), number, dtype=np.uint32))

    def _insert(self, fingerprints: np.ndarray, numbers: np.ndarray) -> None:
        """Each (fingerprint, number) into the first empty entry of its bucket, unless the bucket holds the
        fingerprint already (it keeps its first document); a full bucket's into ``overflow``."""
        while len(fingerprints):
            buckets = fingerprints.astype(np.int64) & self.mask
            rows = self.fingerprints[buckets]
            new = ~(rows == fingerprints[:, None]).any(axis=1)
            new[new] = [f not in self.overflow for f in fingerprints[new].tolist()] if self.overflow else True
            # one entry per bucket in this pass; the others of the same bucket in the next
            _, first = np.unique(buckets, return_index=True)
            now = np.zeros(len(buckets), dtype=bool)
            now[first] = True
            place = now & new
            empty = rows == 0
            room = place & empty.any(axis=1)
            columns = empty.argmax(axis=1)
            self.fingerprints[buckets[room], columns[room]] = fingerprints[room]
            self.numbers[buckets[room], columns[room]] = numbers[room]
            for fingerprint, value in zip(fingerprints[place & ~room].tolist(), numbers[place & ~room].tolist()):
                self.overflow[fingerprint] = value
            self.count += int(place.sum())
            later = ~now & new
            fingerprints, numbers = fingerprints[later], numbers[later]

    def _grow(self) -> None:
        used = self.fingerprints != 0
        fingerprints, numbers = self.fingerprints[used], self.numbers[used]
        extra = self.overflow
        self.overflow = {}
        self._allocate(2 * (self.mask + 1))
        self.count = 0
        fingerprints = np.concatenate([fingerprints, np.fromiter(extra, dtype=np.uint32, count=len(extra))])
        numbers = np.concatenate([numbers, np.fromiter(extra.values(), dtype=np.uint32, count=len(extra))])
        for start in range(0, len(fingerprints), GROW_BATCH):  # bounded temporaries: the peak stays near the tables
            self._insert(fingerprints[start:start + GROW_BATCH], numbers[start:start + GROW_BATCH])
