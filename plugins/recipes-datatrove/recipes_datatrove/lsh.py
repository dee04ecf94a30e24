"""A source's ``near_threshold`` as datatrove's MinHash settings.

datatrove's LSH cuts the signature into ``num_buckets`` bands of ``hashes_per_bucket`` hashes; two
documents become a candidate pair when one band matches, with probability ``1 - (1 - s^r)^b`` at
Jaccard similarity ``s``. datatrove fixes 14 bands of 8 (112 hashes, a threshold near 0.72); here the
bands are chosen, for the same number of hashes, to put the curve's step at the recipe's threshold:
the (b, r) that minimise the false-positive area below the threshold plus the false-negative area
above it, as datasketch's ``MinHashLSH`` chooses them.
"""

from __future__ import annotations

import numpy as np
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.utils.hashing import HashConfig

NUM_HASHES = 112
N_GRAMS = 5
# datatrove 0.10.1's default xxhash path raises with xxhash >= 4 (which `datasets` installs), in every
# dedup step: sha1 is the hash that works with any xxhash
HASH = HashConfig(precision=64, hash_fc="sha1")


def bands_for(threshold: float, num_hashes: int = NUM_HASHES) -> tuple[int, int]:
    """(bands, rows per band), ``bands * rows <= num_hashes``, whose candidate curve steps at ``threshold``."""
    def area(lo: float, hi: float, b: int, r: int, above: bool) -> float:
        s = np.linspace(lo, hi, 101)
        p = 1 - (1 - s ** r) ** b
        return float(np.trapezoid(1 - p if above else p, s))

    best, chosen = None, (1, num_hashes)
    for b in range(1, num_hashes + 1):
        for r in range(1, num_hashes // b + 1):
            error = area(0.0, threshold, b, r, False) + area(threshold, 1.0, b, r, True)
            if best is None or error < best:
                best, chosen = error, (b, r)
    return chosen


def minhash_config(threshold: float, num_hashes: int = NUM_HASHES) -> MinhashConfig:
    bands, rows = bands_for(threshold, num_hashes)
    return MinhashConfig(n_grams=N_GRAMS, num_buckets=bands, hashes_per_bucket=rows, hash_config=HASH)
