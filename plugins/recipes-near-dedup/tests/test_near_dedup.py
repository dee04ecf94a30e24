"""The near_dedup filter on its own: shingles by script, the LSH bands chosen from the threshold, the
planted near copies found with the first occurrence kept and named, distinct documents kept, and the
provider as the registry sees it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from recipes_near_dedup.minhash import NearDuplicates, Places, choose_bands, shingles
from recipes_near_dedup.plugin import NearDedupOptions

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from planted_corpus import plant  # noqa: E402


def test_shingles_are_characters_for_cjk_and_words_otherwise():
    assert shingles("深度学习 模型", 5) == ["深度学习模", "度学习模型"]
    assert shingles("The Cat sat, on the mat today.", 5) == ["the cat sat on the", "cat sat on the mat",
                                                            "sat on the mat today"]
    assert shingles("short text", 5) == ["short text"] and shingles("  ", 5) == []
    assert shingles("The Cat sat", 2, unit="chars") == ["th", "he", "ec", "ca", "at", "ts", "sa", "at"]


def test_bands_catch_a_pair_at_the_threshold_nine_times_in_ten():
    for threshold in (0.5, 0.7, 0.8, 0.9):
        bands, rows = choose_bands(threshold, 128)
        assert bands * rows <= 128
        assert 1 - (1 - threshold ** rows) ** bands >= 0.9
        # one row more per band would miss it more often: the fewest candidates that still catch it
        assert 1 - (1 - threshold ** (rows + 1)) ** (128 // (rows + 1)) < 0.9


def test_places_round_trip_compactly():
    places = Places()
    for place in ("a/corpus.jsonl:12", "a/corpus.jsonl:13", "b.parquet#4", "", "odd:place"):
        places.add(place)
    assert [places[i] for i in range(5)] == ["a/corpus.jsonl:12", "a/corpus.jsonl:13", "b.parquet#4", "", "odd:place"]
    assert len(places._names) == 4  # one prefix for both lines of the same file


def _removed(planted, index) -> dict:
    removed = {}
    for path in planted.files:
        for line, row in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            detail = index.check(json.loads(row)["text"], f"{path}:{line}")
            if detail:
                removed[f"{path}:{line}"] = detail
    return removed


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return plant(tmp_path_factory.mktemp("planted"), distinct=60, exact=10, near=40, seed=3)


def test_near_copies_go_distinct_documents_stay(planted):
    removed = _removed(planted, NearDuplicates(threshold=0.5))
    assert all(place in removed for place in planted.exact)
    for language in ("zh", "en"):
        near = [p for p in planted.near if f"{language}.jsonl" in p]
        found = sum(p in removed for p in near)
        assert found >= 0.9 * len(near), (language, found, len(near))
    assert not [p for p in planted.distinct if p in removed]
    # the detail names the first occurrence: a distinct document of the same file
    place = planted.exact[0]
    first = removed[place].rsplit(" of ", 1)[1]
    assert first in planted.distinct and planted.texts[first] == planted.texts[place]
    assert removed[place].startswith("near duplicate (1.00) of ")


def test_letter_edits_escape_word_shingles_but_not_character_shingles(tmp_path):
    # English edited letter by letter changes most word 5-grams (the documented limit of "auto"):
    # the control that the check above can fail, and the way out
    planted = plant(tmp_path, distinct=30, exact=0, near=20, english_edits="letters", seed=4)
    english = [p for p in planted.near if "en.jsonl" in p]
    by_words = _removed(planted, NearDuplicates(threshold=0.5))
    by_chars = _removed(planted, NearDuplicates(threshold=0.5, unit="chars"))
    assert sum(p in by_words for p in english) <= 0.2 * len(english)
    assert sum(p in by_chars for p in english) >= 0.9 * len(english)
    assert not [p for p in planted.distinct if p in by_chars]


def test_the_registry_offers_it_with_corpus_scope():
    from pydantic import ValidationError

    from recipes.plugins.registry import get_registry

    provider = get_registry().filters["near_dedup"]
    assert provider.scope == "corpus" and provider.options_model is NearDedupOptions
    assert NearDedupOptions(threshold=0.7).num_perm == 128
    with pytest.raises(ValidationError, match="does not divide"):
        NearDedupOptions(threshold=0.7, bands=20)
    check = provider.make(NearDedupOptions(threshold=0.8), None)
    assert check("同一段文字，" * 20, "a.jsonl:1") is None
    assert check("同一段文字，" * 20, "a.jsonl:2") == "near duplicate (1.00) of a.jsonl:1"


def test_the_band_index_keeps_every_first_entry_through_growth_and_full_buckets():
    import numpy as np

    from recipes_near_dedup.bands import BandIndex

    index = BandIndex(bands=6, rows=2, buckets=2)  # tiny: it doubles many times and buckets fill up
    rng = np.random.default_rng(0)
    documents = [rng.integers(1, 1 << 32, size=6, dtype=np.uint64).astype(np.uint32) for _ in range(3000)]
    documents[5] = np.array([7, 7, 7, 9, 9, 3], dtype=np.uint32)  # repeated bands within one document
    for number, fingerprints in enumerate(documents):
        index.add(fingerprints, number)
    assert index.mask + 1 >= 3000 * 6 / 8 / 0.6 / 2  # it grew
    for number in (0, 5, 1234, 2999):
        assert number in index.candidates(documents[number])
    again = documents[1234].copy()
    again[:3] = 11  # half its bands changed
    index.add(again, 4000)
    assert index.candidates(documents[1234]) == [1234]  # a bucket keeps its first document
    assert 4000 in index.candidates(np.array([11], dtype=np.uint32))
    assert index.candidates(np.array([5, 6], dtype=np.uint32)) == []


def test_a_threshold_in_the_options_table_beside_near_threshold_is_refused(tmp_path):
    from recipes.config.load import load_recipe
    from recipes.errors import RecipeError

    (tmp_path / "corpus.jsonl").write_text('{"text": "bees"}\n', encoding="utf-8")
    recipe = tmp_path / "r.toml"
    source = ('[model]\npath = "bundled:tiny-qwen2"\n[[stages]]\nname = "s"\nkind = "pretrain"\n[[stages.data]]\n'
              'path = "corpus.jsonl"\nformat = "text"\ndedup = "near"\nfilters = {near_dedup = {%s}}\n')
    recipe.write_text(source % 'shingle = "chars"', encoding="utf-8")
    load_recipe(str(recipe))  # the other options are taken
    recipe.write_text(source % 'threshold = 0.6, shingle = "chars"', encoding="utf-8")
    with pytest.raises(RecipeError, match=r"filters\.near_dedup\.threshold: with dedup = \"near\" the threshold is"):
        load_recipe(str(recipe))
