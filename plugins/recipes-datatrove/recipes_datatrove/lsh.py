"""A stage's near-dedup settings as datatrove's MinHash settings, decided as the built-in near dedup
(recipes-near-dedup) decides them: ``near_threshold`` and, from a ``filters = {near_dedup = {...}}``
table, the same options (``num_perm``, ``bands``, ``ngram``, ``shingle``), with the same defaults.

datatrove's LSH cuts the signature into ``num_buckets`` bands of ``hashes_per_bucket`` hashes; two
documents become a candidate pair when one band matches, with probability ``1 - (1 - s^r)^b`` at
Jaccard similarity ``s``. The bands, unless given: the most rows per band (the fewest candidates) with
which a pair exactly at the threshold still becomes a candidate 9 times in 10. A candidate is a
duplicate only when the share of equal signature values (which estimates the Jaccard similarity)
reaches the threshold (``dedup.FirstKept``): the threshold means what it says, as in prepare.
"""

from __future__ import annotations

from typing import Literal, Optional

from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.utils.hashing import HashConfig
from pydantic import BaseModel, ConfigDict, Field, model_validator

# datatrove 0.10.1's default xxhash path raises with xxhash >= 4 (which `datasets` installs), in every
# dedup step: sha1 is the hash that works with any xxhash
HASH = HashConfig(precision=64, hash_fc="sha1")
CANDIDATE_CHANCE = 0.9  # a pair exactly at the threshold is looked at this often


class NearOptions(BaseModel):
    """The ``near_dedup`` options (recipes-near-dedup's, which validates them where it is installed)."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.5, gt=0, lt=1, description="The estimated Jaccard similarity of two documents' "
                             "shingle sets at or above which the later one goes.")
    num_perm: int = Field(128, ge=8, le=1024, description="MinHash values per document.")
    bands: Optional[int] = Field(None, ge=1, description="LSH bands (num_perm must divide by it); default: chosen "
                                 "from the threshold so that a pair at the threshold is looked at 9 times in 10.")
    ngram: int = Field(5, ge=1, le=32, description="Shingle length, in characters or words.")
    shingle: Literal["auto", "chars", "words"] = Field(
        "auto", description="\"auto\": character n-grams where a document is mostly CJK, word n-grams otherwise.")

    @model_validator(mode="after")
    def _bands_divide(self):
        if self.bands is not None and self.num_perm % self.bands:
            raise ValueError(f"bands = {self.bands} does not divide num_perm = {self.num_perm}")
        return self


def bands_for(threshold: float, num_hashes: int = 128) -> tuple[int, int]:
    """(bands, rows per band), ``bands * rows <= num_hashes``: the most rows with which a pair at
    ``threshold`` becomes a candidate with probability ``CANDIDATE_CHANCE``."""
    for rows in range(num_hashes, 0, -1):
        bands = num_hashes // rows
        if 1 - (1 - threshold ** rows) ** bands >= CANDIDATE_CHANCE:
            return bands, rows
    return num_hashes, 1


def minhash_config(options: NearOptions) -> MinhashConfig:
    if options.bands:
        bands, rows = options.bands, options.num_perm // options.bands
    else:
        bands, rows = bands_for(options.threshold, options.num_perm)
    return MinhashConfig(n_grams=options.ngram, num_buckets=bands, hashes_per_bucket=rows, hash_config=HASH)
