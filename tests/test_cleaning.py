"""Cleaning in `recipes prepare`: exact dedup, the built-in filters, the filter hook, the counts per
reason, the store key, and the settings' validation, through the real CLI and the real tokenizer."""

from __future__ import annotations

import pytest

from conftest import write
from recipes.config.load import load_recipe
from recipes.plugins.hookspecs import FilterContext
from recipes.plugins.registry import get_registry
from test_validate import GOOD, _errors, recipe_dir  # noqa: F401 (a fixture)


def _check(name: str, options: dict | None = None, script: str | None = None):
    provider = get_registry().filters[name]
    context = FilterContext("s", "src", None, cjk=None if script is None else script == "cjk", script=script)
    return provider.make(provider.options_model(**(options or {})), context)


def test_each_builtin_filter_removes_its_case_and_keeps_a_control():
    english = "The queen bee lays the eggs of the hive while workers gather nectar from the flowers nearby."
    chinese = "蜂王负责产卵，工蜂负责采集花蜜和花粉，雄蜂的任务是与蜂王交配，蜂群在春天分蜂。"
    length = _check("length", {"min_chars": 20, "max_chars": 200})
    assert length(english, "") is None
    assert "< min_chars 20" in length("Bees.", "")
    assert "> max_chars 200" in length(english * 3, "")
    cjk = _check("script", {"min_share": 0.5}, script="cjk")
    assert cjk(chinese, "") is None
    assert "cjk share 0.00 < 0.50" == cjk(english, "")
    latin = _check("script", script="latin")
    assert latin(english, "") is None and latin(chinese, "").startswith("latin share 0.00")
    lines = _check("repeated_lines")
    varied = "\n".join(f"line {i} about bees" for i in range(6))
    assert lines(varied, "") is None
    assert "repeated lines 0.42 > 0.30" in lines(varied + "\n" + "\n".join(["Subscribe now"] * 6), "")
    ngrams = _check("repeated_ngrams")
    assert ngrams(english, "") is None and ngrams(chinese, "") is None
    assert "repeated word 5-grams" in ngrams(" ".join([english] * 3), "")
    assert "repeated character 10-grams" in ngrams(chinese * 3, "")  # CJK: characters, no spaces needed


def test_cleaning_mistakes_are_located_by_line_and_field(recipe_dir, monkeypatch):
    # as without plugins/recipes-near-dedup installed (CI installs it)
    monkeypatch.delitem(get_registry().filters, "near_dedup", raising=False)
    text = GOOD.replace('path = "corpus.jsonl"\nformat = "text"',
                        'path = "corpus.jsonl"\nformat = "text"\ndedup = "near"\n'
                        'filters = {lenght = true, length = {min_chars = -1}, script = true}')
    text = text.replace('path = "chat.jsonl"\nformat = "messages"',
                        'path = "chat.jsonl"\nformat = "messages"\nnormalize = "text"')
    text += '\n[[stages.eval_data]]\npath = "chat.jsonl"\nformat = "messages"\ndedup = "none"\n'
    errors = _errors(write(recipe_dir / "r.toml", text))
    near = [e for e in errors if "stages[0].data[0].dedup:" in e]
    assert len(near) == 1 and ":13:1:" in near[0] and "pip install -e plugins/recipes-near-dedup" in near[0]
    assert any(":14:1:" in e and "stages[0].data[0].filters.lenght: unknown filter 'lenght'; did you mean "
               '"length"?' in e for e in errors)
    assert any(":14:1:" in e and "stages[0].data[0].filters.length.min_chars:" in e for e in errors)
    assert any("stages[0].data[0].filters.script:" in e and 'set script = "cjk"' in e for e in errors)
    assert any(":23:1: stages[1].data[0].normalize:" in e for e in errors)
    assert any(":28:1: stages[1].eval_data[0].dedup:" in e and "an evaluation set is kept whole" in e
               for e in errors)
    assert len(errors) == 6, errors
    # the defaults validate: cleaning left alone is no error anywhere
    load_recipe(str(write(recipe_dir / "ok.toml", GOOD)))
