"""A source's ``near_threshold`` as datatrove's MinHash settings, decided as the built-in near dedup
(recipes-near-dedup) decides.

datatrove's LSH cuts the signature into ``num_buckets`` bands of ``hashes_per_bucket`` hashes; two
documents become a candidate pair when one band matches, with probability ``1 - (1 - s^r)^b`` at
Jaccard similarity ``s``. The bands: the most rows per band (the fewest candidates) with which a pair
exactly at the threshold still becomes a candidate 9 times in 10, over at most 128 hashes. A candidate
is a duplicate only when the share of equal signature values (which estimates the Jaccard similarity)
reaches the threshold (``dedup.FirstKept``): the threshold means what it says, as in prepare.
"""

from __future__ import annotations

from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.utils.hashing import HashConfig

NUM_HASHES = 128  # as the built-in near dedup (recipes-near-dedup)
N_GRAMS = 5
# datatrove 0.10.1's default xxhash path raises with xxhash >= 4 (which `datasets` installs), in every
# dedup step: sha1 is the hash that works with any xxhash
HASH = HashConfig(precision=64, hash_fc="sha1")


CANDIDATE_CHANCE = 0.9  # a pair exactly at the threshold is looked at this often


def bands_for(threshold: float, num_hashes: int = NUM_HASHES) -> tuple[int, int]:
    """(bands, rows per band), ``bands * rows <= num_hashes``: the most rows with which a pair at
    ``threshold`` becomes a candidate with probability ``CANDIDATE_CHANCE``."""
    for rows in range(num_hashes, 0, -1):
        bands = num_hashes // rows
        if 1 - (1 - threshold ** rows) ** bands >= CANDIDATE_CHANCE:
            return bands, rows
    return num_hashes, 1


def minhash_config(threshold: float, num_hashes: int = NUM_HASHES) -> MinhashConfig:
    bands, rows = bands_for(threshold, num_hashes)
    return MinhashConfig(n_grams=N_GRAMS, num_buckets=bands, hashes_per_bucket=rows, hash_config=HASH)
