"""Near-duplicate removal for recipes: MinHash LSH (rensa) as the ``near_dedup`` document filter."""
