"""``dedup = "near"`` on a source: the ``near_dedup`` document filter, MinHash LSH through rensa
(``recipes_near_dedup.minhash``). Corpus scope: one index sees every document of the stage's sources
that set it, in recipe order, and a document goes when it nearly duplicates an earlier one (the first
occurrence is kept); its detail names the earlier document's place and their estimated similarity.

The host builds the options with ``threshold`` from the source's ``near_threshold``; the other
options keep their defaults unless a ``filters = {near_dedup = {...}}`` table gives them. rensa (and
numpy) are imported when a stage's filter is made, never by ``recipes validate``.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from recipes.api import DocumentFilter, RecipeError, hookimpl

REQUIRES_RECIPES_API = 1
INSTALL = "pip install -e plugins/recipes-near-dedup (it installs rensa 0.5)"


class NearDedupOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.5, gt=0, lt=1, description="The estimated Jaccard similarity of two documents' "
                             "shingle sets at or above which the later one goes (5% of a Chinese text's "
                             "characters changed leaves about 0.63 of its character 5-grams shared).")
    num_perm: int = Field(128, ge=8, le=1024, description="MinHash values per document (the most: the "
                          "signature keeps bands x rows of them).")
    bands: Optional[int] = Field(None, ge=1, description="LSH bands (num_perm must divide by it); default: chosen "
                                 "from the threshold so that a pair at the threshold is looked at 9 times in 10.")
    ngram: int = Field(5, ge=1, le=32, description="Shingle length, in characters or words.")
    shingle: Literal["auto", "chars", "words"] = Field(
        "auto", description="\"auto\": character n-grams where a document is mostly CJK (over 30% of its "
        "non-space characters), word n-grams otherwise; \"chars\" for every document (English edited letter "
        "by letter, e.g. OCR errors, changes most word 5-grams); \"words\".")

    @model_validator(mode="after")
    def _bands_divide(self):
        if self.bands is not None and self.num_perm % self.bands:
            raise ValueError(f"bands = {self.bands} does not divide num_perm = {self.num_perm}")
        return self


def make_near_dedup(options: NearDedupOptions, context):
    try:
        from recipes_near_dedup.minhash import NearDuplicates
    except ImportError as exc:
        raise RecipeError(f"dedup = \"near\" needs rensa ({exc}): {INSTALL}") from None
    index = NearDuplicates(options.threshold, options.num_perm, options.bands, options.ngram, options.shingle)
    return index.check


@hookimpl
def register_filters():
    return [DocumentFilter("near_dedup", make_near_dedup, NearDedupOptions, scope="corpus",
                           description="near-duplicate documents (MinHash LSH, rensa) go; the first is kept")]
