"""One epoch of a weighted stage is one pass over its main source (the largest weight, or `main =
true`); a source seen more than four times over the stage is named by validate, plan and the run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from recipes.cli import main
from recipes.data.mixing import mix
from conftest import write


def _corpus(path, documents: int, words: int, tag: str):
    lines = [json.dumps({"text": " ".join(f"{tag}{d}w{w}" for w in range(words))}) for d in range(documents)]
    return write(path, "\n".join(lines) + "\n")


def _recipe(folder, weights: str = "weight = 0.9", general: str = "weight = 0.1", epochs: float = 1.0,
            extra: str = ""):
    _corpus(folder / "domain.jsonl", 20, 40, "d")  # small: about 1/25 of the general corpus
    _corpus(folder / "general.jsonl", 250, 80, "g")
    return write(folder / "r.toml", f'''[model]
path = "bundled:tiny-qwen2"
[[stages]]
name = "cpt"
kind = "pretrain"
cutoff_len = 64
num_train_epochs = {epochs}
{extra}
[[stages.data]]
path = "domain.jsonl"
format = "text"
{weights}
[[stages.data]]
path = "general.jsonl"
format = "text"
{general}
''')


def test_a_small_domain_corpus_weighted_09_is_seen_once_per_epoch_not_54_times():
    domain, general = np.full(35, 100), np.full(2000, 100)  # 3.5k tokens beside 200k, as a user had them
    order, got = mix([domain, general], [0.9, 0.1], seed=1, names=["domain", "general"])
    assert got[0].examples == 35 and got[0].tokens == 3500  # once per epoch (the old rule: 54 times)
    assert got[0].share == pytest.approx(0.9, abs=0.01)
    assert got[1].examples < len(general)  # the general corpus is under-sampled to its 10%
    assert len(order) == got[0].examples + got[1].examples


def test_main_true_makes_an_epoch_one_pass_over_that_source():
    domain, general = np.full(35, 100), np.full(2000, 100)
    _, got = mix([domain, general], [0.5, 0.5], seed=1, mains=[None, True])
    assert got[1].examples == 2000  # one pass over the source marked main
    assert got[0].examples == 2000  # the other at an equal share: over-sampled about 57 times


def test_validate_names_a_source_seen_more_than_four_times(tmp_path):
    recipe = _recipe(tmp_path, epochs=5)  # the domain corpus: once per epoch, five epochs
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "source 'domain' is seen 5.0 times over the stage" in result.output
    assert "'general'" not in result.output.split("warning:")[-1]
    fine = _recipe(tmp_path / "two", epochs=2)  # twice: nothing to say (the old rule: a hundred times)
    result = CliRunner().invoke(main, ["validate", str(fine)])
    assert result.exit_code == 0 and "times over the stage" not in result.output, result.output


def test_validate_names_the_source_that_main_makes_repeated(tmp_path):
    recipe = _recipe(tmp_path, "weight = 0.5", "weight = 0.5\nmain = true")
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "r.toml:12:1: stages[0].data[0].weight: source 'domain' is seen" in result.output


def test_plan_and_the_run_say_it_too(tmp_path, tokenizer):
    from recipes.config.load import load_recipe
    from recipes.data.prepare import prepare
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry

    recipe = _recipe(tmp_path, epochs=6)
    result = CliRunner().invoke(main, ["plan", str(recipe), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "note: source 'domain' is seen 6.0 times over the stage" in result.output
    registry = get_registry()
    plan = make_plan(load_recipe(str(recipe), registry), registry)
    data = prepare(plan.stages[0], tokenizer, lambda message: None)  # what the run prints as the stage starts
    assert any(note.startswith("warning: source 'domain' is seen 6.0 times") for note in data.stats.notes), \
        data.stats.notes
    domain = next(m for m in data.mix if m["name"] == "domain")
    assert domain["tokens"] == domain["offered_tokens"]  # one pass per epoch


@pytest.mark.parametrize("weights, general, message", [
    ("weight = 0.5\nmain = true", "weight = 0.5\nmain = true", "two main sources in this stage"),
    ("main = true", "", "main says which source one epoch passes over once"),
])
def test_main_is_refused_where_it_means_nothing(tmp_path, weights, general, message):
    recipe = _recipe(tmp_path, weights, general)
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert result.exit_code == 2 and message in result.output, result.output
