"""recipes-datatrove: a recipe stage's cleaning, exact dedup and MinHash near dedup as datatrove
pipelines, for corpora too large for one machine (``recipes-datatrove clean``; docs/datatrove.md)."""
