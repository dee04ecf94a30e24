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


# --- the pipeline, through the real CLI ----------------------------------------------------------

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from recipes.cli import main  # noqa: E402

ENGLISH = [f"Hive note {i}: the colony sends {i % 7 + 2} foragers to the clover at dawn, and number {i} returns "
           f"with pollen." for i in range(40)]
CHINESE = [f"第{i}号蜂箱：工蜂在清晨采集花蜜，蜂王每天产卵约{1000 + i}枚，蜂群保持温暖。" for i in range(20)]


def _planted(text: str, i: int) -> str:
    """An exact copy once normalised: spacing, full-width forms or a line end differ."""
    forms = (lambda t: "  " + t.replace(" ", "   ") + " ",
             lambda t: t.replace("0", "０").replace("1", "１").replace("2", "２"),  # full-width digits
             lambda t: "\n\n" + t.replace(" ", "\t") + "\r\n")
    return forms[i % len(forms)](text)


@pytest.fixture
def corpus(tmp_path, tiny_model, monkeypatch):
    """Two sources with planted copies (within each and across them), a private store, a recipe."""
    first = ENGLISH[:30] + CHINESE[:10]
    copies_in_first = [_planted(first[i], i) for i in range(0, 40, 5)]  # 8 copies of earlier documents
    second = ENGLISH[30:] + CHINESE[10:] + [_planted(first[i], i) for i in (1, 2, 33)]  # 3 copies of the first source
    write(tmp_path / "first.jsonl", "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                                            for t in first + copies_in_first))
    write(tmp_path / "second.jsonl", "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in second))
    return tmp_path, _private_cache(tmp_path / "cache", tiny_model, monkeypatch)


def _private_cache(cache: Path, tiny_model, monkeypatch) -> Path:
    """A token store of the test's own (with the session's tiny model in it)."""
    cache.mkdir()
    (cache / tiny_model.name).symlink_to(tiny_model)
    monkeypatch.setenv("RECIPES_CACHE", str(cache))
    return cache


DOMAIN = """
[model]
path = "{model}"
[[stages]]
name = "domain"
kind = "pretrain"
cutoff_len = 64
"""


def _recipe(folder: Path, tiny_model, source_keys: str = "", name: str = "r.toml") -> Path:
    return write(folder / name, DOMAIN.format(model=tiny_model) + f"""max_steps = 1
per_device_train_batch_size = 1
gradient_accumulation_steps = 1
[[stages.data]]
path = "first.jsonl"
format = "text"
{source_keys}
[[stages.data]]
path = "second.jsonl"
format = "text"
{source_keys}
""")


def cli(*args, code=0) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output + repr(result.exception)
    return result.output


def _tokens(texts, tokenizer) -> int:
    return sum(len(ids) + 1 for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"])


def test_planted_copies_go_and_every_distinct_document_stays(corpus, tiny_model, tokenizer):
    folder, _ = corpus
    recipe = _recipe(folder, tiny_model)
    output = cli("prepare", recipe)
    assert "data 'first': cleaning removed 8 of 48 records: exact 8" in output
    assert "data 'second': cleaning removed 3 of 23 records: exact 3" in output
    [report] = json.loads(cli("data", "inspect", recipe, "--json", "--removed", "-n", "20"))["stages"]
    assert {s: {r: c["documents"] for r, c in found.items()} for s, found in report["removed"].items()} == {
        "first": {"exact": 8}, "second": {"exact": 3}}
    # no distinct document removed: the store holds every distinct document's tokens, and the copies'
    # tokens are what was counted as removed
    distinct = ENGLISH + CHINESE
    assert report["tokens"] == _tokens(distinct, tokenizer)
    removed = report["removed_examples"]
    assert {e["detail"] for e in removed["second"]} == {
        f"duplicate of {folder / 'first.jsonl'}:{line}" for line in (2, 3, 34)}
    assert all(e["detail"].startswith("duplicate of ") and e["place"].startswith(str(folder / "first.jsonl"))
               for e in removed["first"])
    # the control: without dedup every copy is trained on
    control = _recipe(folder, tiny_model, 'dedup = "none"', "none.toml")
    [whole] = json.loads(cli("data", "inspect", control, "--json"))["stages"]
    assert whole["removed"] == {"first": {}, "second": {}}
    assert whole["tokens"] > report["tokens"]

    # a run keeps the counts in stage.json and the report
    run = folder / "run"
    cli("run", recipe, "-o", run)
    stage = json.loads((run / "stages" / "domain" / "stage.json").read_text())
    assert stage["data"]["removed"] == report["removed"]
    assert "- domain: removed by cleaning from second: exact 3 (" in (run / "report" / "report.md").read_text()


def _store_ids(cache: Path) -> list[np.ndarray]:
    """Each store's token stream, in the order of the stores' sources (by the files they read)."""
    out = {}
    for folder in (cache / "store").iterdir():
        if (folder / "store.json").is_file():
            out[folder.name] = np.concatenate([np.load(f) for f in sorted(folder.glob("shard-*.ids.npy"))])
    return sorted(out.values(), key=len)


def test_the_spill_to_sorted_files_and_the_worker_processes_give_the_same_result(corpus, tiny_model, monkeypatch):
    from recipes.data import build
    from recipes.data.dedup import SeenDigests

    # the digest set alone: a limit of 5 digests in memory spills to files, and decides as a set does
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 60, 25).astype(np.uint64) for _ in range(8)]
    seen, reference = SeenDigests(corpus[0] / "work", limit=5), set()
    for batch in batches:
        expected = []
        for value in batch.tolist():
            expected.append(value not in reference)
            reference.add(value)
        assert seen.first_seen(batch).tolist() == expected
    assert len(seen.files) > 3 and len(seen) == len(reference)

    # the whole path: one process and a large memory, against two workers, small chunks and 2 digests
    folder, cache = corpus
    recipe = _recipe(folder, tiny_model)
    cli("prepare", recipe)
    whole = _store_ids(cache)
    spilled = _private_cache(folder / "spilled", tiny_model, monkeypatch)
    monkeypatch.setenv("RECIPES_DEDUP_IN_MEMORY", "2")
    monkeypatch.setattr(build, "CHUNK_CHARACTERS", 900)  # several chunks per source: the pool is used
    output = cli("prepare", recipe, "--workers", "2")
    assert "2 processes" in output and "exact 8" in output and "exact 3" in output
    parts = _store_ids(spilled)
    assert len(parts) == 2 and all(np.array_equal(a, b) for a, b in zip(whole, parts))


def test_the_store_key_covers_every_cleaning_setting_and_the_earlier_sources(corpus, tiny_model):
    from recipes.data.prepare import store_key
    from recipes.planning.plan import make_plan

    folder, _ = corpus
    registry = get_registry()

    def keys(source_keys: str = "", first_file: str = "first.jsonl") -> list[str]:
        recipe = _recipe(folder, tiny_model, source_keys, "k.toml")
        recipe.write_text(recipe.read_text().replace('"first.jsonl"', f'"{first_file}"'))
        [stage] = make_plan(load_recipe(str(recipe), registry), registry).stages
        found = []
        for source in stage.sources:
            found.append(store_key([source], "documents", "tokenizer", stage.settings, source.cleaning, list(found)))
        return found

    first, second = keys()
    for setting in ('dedup = "none"', 'normalize = "none"', 'normalize = "text"', 'script = "latin"',
                    "filters = {length = true}", "filters = {length = {min_chars = 10}}"):
        changed = keys(setting)
        assert changed[0] != first and changed[1] != second, setting
    assert keys("filters = {length = false}") == [first, second]  # a filter turned off is no filter
    # the second source is deduplicated against the first: its store follows the first one's content
    write(folder / "other.jsonl", (folder / "first.jsonl").read_text() + json.dumps({"text": "New."}) + "\n")
    moved = keys(first_file="other.jsonl")
    assert moved[0] != first and moved[1] != second
    kept_whole = keys('dedup = "none"'), keys('dedup = "none"', "other.jsonl")
    assert kept_whole[0][1] == kept_whole[1][1]  # without dedup it does not
    # each filter's name, options and the version of the package that provides it
    from recipes import __version__
    from recipes.data.cleaning import source_cleaning
    from recipes.config.data_source import DataSource

    spec = DataSource(path="x", format="text", filters={"length": {"min_chars": 10}})
    assert source_cleaning(spec, "s", "x").key(registry)["filters"] == [
        {"name": "length", "options": {"min_chars": 10}, "provider": f"recipes {__version__}"}]


def test_the_documented_filter_removes_what_it_names_through_recipes_prepare(corpus, tiny_model, monkeypatch):
    """The filter example of docs/plugin_hooks.md, registered as a plugin, removes the documents it
    names in a pre-training stage; an SFT stage's repeated conversations go as exact copies."""
    from recipes.plugins import registry as registry_module
    from test_hook_docs import _example, _sections

    plugin = _example(_sections()["register_filters"])
    monkeypatch.setattr(registry_module, "_cached", get_registry(extra_plugins=(plugin,)))
    folder, _ = corpus
    notes = [f"Bee fact {i}: a worker visits {i + 50} flowers a trip." for i in range(12)]
    notes[3] += " All rights reserved."
    notes[7] += " Subscribe to our newsletter."
    write(folder / "notes.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in notes))
    chats = [{"messages": [{"role": "user", "content": f"How many eggs on day {i % 5}?"},
                           {"role": "assistant", "content": f"About {1000 + i % 5} eggs."}]} for i in range(10)]
    write(folder / "chat.jsonl", "".join(json.dumps(c) + "\n" for c in chats))
    recipe = write(folder / "doc.toml", DOMAIN.format(model=tiny_model) + f"""[[stages.data]]
path = "notes.jsonl"
format = "text"
filters = {{boilerplate = {{phrases = ["all rights reserved", "subscribe to"]}}}}
[[stages]]
name = "chat"
kind = "sft"
[[stages.data]]
path = "chat.jsonl"
format = "messages"
""")
    domain, chat = json.loads(cli("data", "inspect", recipe, "--json", "--removed"))["stages"]
    assert domain["removed"] == {"notes": {"boilerplate": {"documents": 2, "tokens": domain["removed"]["notes"]
                                                           ["boilerplate"]["tokens"]}}}
    assert [(e["place"].rsplit(":", 1)[1], e["detail"]) for e in domain["removed_examples"]["notes"]] == [
        ("4", "contains 'all rights reserved'"), ("8", "contains 'subscribe to'")]
    assert domain["records"] == 12 and chat["records"] == 10
    assert chat["removed"]["chat"]["exact"]["documents"] == 5 and chat["sequences"] == 5
    assert all(e["detail"].startswith(f"duplicate of {folder / 'chat.jsonl'}:") for e in chat["removed_examples"]["chat"])


def _prefix_near_dedup():
    """A stand-in for plugins/recipes-near-dedup through the same contract: a corpus-scope filter named
    near_dedup whose options take the threshold; "near" here: the same first 40 characters."""
    import types

    from pydantic import BaseModel

    from recipes.api import DocumentFilter, hookimpl

    class NearOptions(BaseModel):
        threshold: float

    def make(options, context):
        first: dict[str, str] = {}
        made.append(context.source_name)

        def check(text, place):
            key = text[:40]
            if key in first:
                return f"near copy of {first[key]}"
            first[key] = place
            return None
        return check

    made: list[str] = []
    plugin = types.ModuleType("prefix_near_dedup")
    plugin.register_filters = hookimpl(lambda: [DocumentFilter("near_dedup", make, NearOptions, scope="corpus")])
    return plugin, made


def test_near_dedup_is_one_corpus_filter_per_stage_fed_again_from_a_ready_store(corpus, tiny_model, monkeypatch):
    from recipes.plugins import registry as registry_module

    plugin, made = _prefix_near_dedup()
    from importlib.metadata import entry_points

    # this stand-in, not plugins/recipes-near-dedup (which CI installs): every other installed plugin
    others = [ep.name for ep in entry_points(group=registry_module.ENTRY_POINT_GROUP) if ep.name != "near_dedup"]
    monkeypatch.setenv("RECIPES_PLUGINS", ",".join(others))
    monkeypatch.setattr(registry_module, "_cached", get_registry(extra_plugins=(plugin,)))
    folder, _ = corpus
    # near copies: an earlier document's first 40 characters with another ending, in both sources
    near = [ENGLISH[i][:45] + " Another ending." for i in (4, 31)]
    with open(folder / "second.jsonl", "a") as handle:
        handle.write("".join(json.dumps({"text": t}) + "\n" for t in near))
    recipe = _recipe(folder, tiny_model, 'dedup = "near"')
    [report] = json.loads(cli("data", "inspect", recipe, "--json", "--removed"))["stages"]
    assert made == ["first"]  # one instance for the stage, made for the first source that needs it
    assert report["removed"]["second"]["near"]["documents"] == 2 and report["removed"]["second"]["exact"]["documents"] == 3
    assert sorted(e["detail"] for e in report["removed_examples"]["second"] if e["reason"] == "near") == [
        f"near copy of {folder / 'first.jsonl'}:5", f"near copy of {folder / 'second.jsonl'}:2"]
    # the second source changes: its store is built again while the first one's is ready, and the
    # filter sees the first source's documents again before the second's (else one near copy stays)
    with open(folder / "second.jsonl", "a") as handle:
        handle.write(json.dumps({"text": "A late document about drones."}) + "\n")
    made.clear()
    [again] = json.loads(cli("data", "inspect", recipe, "--json"))["stages"]
    assert len(made) == 1 and again["removed"] == report["removed"]
