"""Issue 20: what a stage's fingerprint covers beyond its settings and data. Each test builds the plan
from a real recipe and real files and calls the real fingerprint and decide(); nothing trains."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import write
from recipes.hashing import digest

RECIPE = """
name = "fp"
[model]
path = "bundled:tiny-qwen2"
[[stages]]
name = "pre"
kind = "pretrain"
[[stages.data]]
path = "corpus.jsonl"
format = "text"
[[stages.eval_data]]
path = "held.jsonl"
format = "text"
[[stages]]
name = "chat"
kind = "sft"
[[stages.data]]
path = "chat.jsonl"
format = "messages"
"""
CHAT = json.dumps({"messages": [{"role": "user", "content": "Who makes honey?"},
                                {"role": "assistant", "content": "Bees do."}]}) + "\n"


def _plan(folder: Path):
    from recipes.config.load import load_recipe
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry

    if not (folder / "fp.toml").is_file():
        write(folder / "corpus.jsonl", json.dumps({"text": "Bees make honey."}) + "\n")
        write(folder / "held.jsonl", json.dumps({"text": "Bees keep warm in winter."}) + "\n")
        write(folder / "chat.jsonl", CHAT)
        write(folder / "fp.toml", RECIPE)
    registry = get_registry()
    return make_plan(load_recipe(str(folder / "fp.toml"), registry), registry, str(folder / "run")), registry


def _parts(folder: Path, stage: int = 0, tokenizer_folder=None) -> dict:
    from recipes.run.fingerprint import stage_parts

    plan, registry = _plan(folder)
    return stage_parts(plan, plan.stages[stage], "base-fingerprint", registry, tokenizer_folder)


def _decided(folder: Path, old: dict, new: dict) -> tuple:
    """decide() for a stage the manifest holds as done with ``old`` parts, now with ``new``."""
    from recipes.run.runner import decide

    plan, _ = _plan(folder)
    entry = {"status": "done", "fingerprint": digest(old), "parts": old, "outputs": {}}
    return decide(plan, plan.stages[0], entry, digest(new), new, forced=False, after=None)[:2]


def test_eval_data_is_in_the_fingerprint(tmp_path):
    before = _parts(tmp_path)
    write(tmp_path / "held.jsonl", json.dumps({"text": "Bees fan their wings to cool the hive."}) + "\n")
    after = _parts(tmp_path)
    assert before["data"] == after["data"] and digest(before) != digest(after)
    assert _decided(tmp_path, before, after) == ("fresh", "eval data changed: held.jsonl")


def test_the_resolved_precision_is_in_the_fingerprint(tmp_path):
    from recipes.training.precision import pick_precision

    here = _parts(tmp_path)
    assert here["settings"]["precision"] == "auto"
    assert here["precision"] == pick_precision("auto")[0]  # decided without torch, as torch decides it
    elsewhere = {**here, "precision": "bf16" if here["precision"] != "bf16" else "fp32"}  # trained on another machine
    assert digest(elsewhere) != digest(here)
    assert _decided(tmp_path, elsewhere, here) == ("fresh", f"precision changed: {elsewhere['precision']} -> "
                                                            f"{here['precision']}")


def test_the_world_size_is_in_the_fingerprint(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    alone = _parts(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it in each of 2 processes
    two = _parts(tmp_path)
    assert (alone["world_size"], two["world_size"]) == (1, 2) and digest(alone) != digest(two)
    assert _decided(tmp_path, alone, two) == ("fresh", "processes changed: 1 -> 2")


def test_the_chat_template_fallback_is_in_the_fingerprint(tmp_path):
    own = write(tmp_path / "own" / "tokenizer_config.json", json.dumps({"chat_template": "{{ messages }}"})).parent
    saved = write(tmp_path / "saved" / "chat_template.jinja", "{{ messages }}").parent  # how transformers 5 saves it
    none = write(tmp_path / "none" / "tokenizer_config.json", json.dumps({"eos_token": "<|endoftext|>"})).parent
    with_own, with_saved, without = (_parts(tmp_path, 1, folder) for folder in (own, saved, none))
    assert with_own["chat_template"] is None and with_saved["chat_template"] is None
    assert without["chat_template"]["family"] == "qwen" and len(without["chat_template"]["sha256"]) == 64
    assert digest(with_own) == digest(with_saved) != digest(without)
    from recipes.run.runner import decide

    plan, _ = _plan(tmp_path)
    entry = {"status": "done", "fingerprint": digest(with_own), "parts": with_own, "outputs": {}}
    assert decide(plan, plan.stages[1], entry, digest(without), without, forced=False, after=None)[:2] == (
        "fresh", "chat template changed: the tokenizer's own -> the qwen family's (the tokenizer has none)")
    # a pre-training stage renders no conversation: its fingerprint does not depend on the template
    assert digest(_parts(tmp_path, 0, own)) == digest(_parts(tmp_path, 0, none))


def test_operational_settings_are_left_out_and_a_real_setting_is_not(tmp_path):
    """logging, checkpoint cadence and the non-finite guard decide nothing a stage publishes: changing
    them keeps a finished stage; the learning rate (control) retrains it."""
    recipe = tmp_path / "fp.toml"
    base = _parts(tmp_path)
    for line in ("logging_steps = 3", "save_steps = 7", "save_total_limit = 5", "skip_nonfinite_batches = 2",
                 "learning_rate = 3e-3"):
        write(recipe, RECIPE.replace('kind = "pretrain"\n', f'kind = "pretrain"\n{line}\n', 1))
        changed = _parts(tmp_path)
        key = line.split(" = ")[0]
        assert changed["settings"] != base["settings"] or key != "learning_rate"
        if key == "learning_rate":
            assert _decided(tmp_path, base, changed) == ("fresh", "settings changed: learning_rate 0.0001 -> 0.003")
        else:
            assert key not in changed["settings"] and digest(changed) == digest(base), key


def test_quantization_and_library_and_plugin_versions_are_in_the_fingerprint(tmp_path):
    from importlib import metadata

    from recipes.plugins.registry import get_registry

    plain = _parts(tmp_path)
    assert plain["versions"]["torch"] == metadata.version("torch")
    assert plain["versions"]["transformers"] == metadata.version("transformers")
    assert plain["versions"]["plugin:qwen"] == get_registry().info["qwen"].version
    older = {**plain, "versions": {**plain["versions"], "peft": "0.1.0"}}
    assert _decided(tmp_path, older, plain) == (
        "fresh", f"library versions changed: peft 0.1.0 -> {metadata.version('peft')}")
    plugin = {**plain, "versions": {**plain["versions"], "plugin:qwen": "0.0.1"}}
    assert _decided(tmp_path, plugin, plain)[0] == "fresh"

    write(tmp_path / "fp.toml", RECIPE.replace("[[stages]]", '[quantization]\nbackend = "bitsandbytes"\n\n[[stages]]', 1))
    quantized = _parts(tmp_path)
    assert quantized["quantization"]["backend"] == "bitsandbytes" and plain["quantization"]["backend"] == "none"
    assert _decided(tmp_path, plain, quantized) == ("fresh", "quantization changed")
