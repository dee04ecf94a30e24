"""Stage kinds come from plugins: the built-ins register pretrain and sft like any other, `recipes
plugins` lists the kinds, an unknown kind is one line naming the package to install, and a
third-party kind with its own training runs a real stage through the host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

from click.testing import CliRunner
from rich.console import Console

from conftest import write
from recipes.cli import main
from recipes.config.load import load_recipe
from recipes.planning.plan import make_plan
from recipes.plugins.registry import get_registry

NOTES = "Bees keep the hive warm in winter by shivering their flight muscles around the queen.\n"


def _recipe(tmp_path, model: str, kind: str, extra: str = "") -> str:
    write(tmp_path / "notes.txt", "".join(f"{i}. {NOTES}" for i in range(30)))  # distinct: copies would be removed
    return str(write(tmp_path / "r.toml", f"""
[model]
path = "{model}"
[[stages]]
name = "read"
kind = "{kind}"
cutoff_len = 32
max_steps = 2
per_device_train_batch_size = 2
gradient_accumulation_steps = 1
save_steps = 1
{extra}
[[stages.data]]
path = "notes.txt"
format = "text"
"""))


def test_the_builtin_kinds_are_plugins_and_plugins_lists_them(tmp_path):
    registry = get_registry()
    assert {"pretrain", "sft"} <= set(registry.kinds)
    assert {"kind:pretrain", "kind:sft"} <= set(registry.provided_by("recipes.builtin.kinds"))
    assert registry.kinds["sft"].chat and not registry.kinds["pretrain"].chat
    assert registry.kinds["sft"].defaults["learning_rate"] == 5e-5  # the seed plan's SFT rate, from its plugin
    listed = CliRunner().invoke(main, ["plugins"])
    assert listed.exit_code == 0
    assert "kind:pretrain: continued pre-training" in listed.output and "kind:dpo: direct preference" in listed.output

    # without the plugin package that provides it, a kind is one line naming the package to install
    recipe = _recipe(tmp_path, "bundled:tiny-qwen2", "dpo")
    result = subprocess.run([sys.executable, "-m", "recipes", "validate", recipe], capture_output=True, text=True,
                            env={**os.environ, "RECIPES_PLUGINS": "qwen"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "stages[0].kind: unknown stage kind 'dpo'; the plugin package recipes-trl provides it: pip install -e " \
           "plugins/recipes-trl" in result.stderr.replace("\n", " "), result.stderr
    # with it installed, the kind is known (its data must then be preference pairs)
    installed = CliRunner().invoke(main, ["validate", recipe])
    assert "unknown stage kind" not in installed.output
    assert "format 'text' gives documents, but a dpo stage trains on preferences" in installed.output
    typo = CliRunner().invoke(main, ["validate", _recipe(tmp_path, "bundled:tiny-qwen2", "pretrian")])
    assert typo.exit_code == 2 and "unknown stage kind 'pretrian'; did you mean \"pretrain\"?" in typo.output


def test_the_documented_third_party_kind_registers_and_runs_a_stage(tmp_path, tiny_model):
    """docs/plugin_hooks.md's worked example (a kind with its own Trainer and evaluation), registered as a
    plugin: it trains a real stage, resumes nothing, publishes, and its figures reach stage.json and
    the report."""
    from test_hook_docs import _example, _sections

    from recipes.outputs.report import read_run
    from recipes.run.runner import run_plan

    plugin = _example(_sections()["register_stage_kinds"])
    plugin.__name__ = "textbook_plugin"
    registry = get_registry(extra_plugins=(plugin,))
    loaded = load_recipe(_recipe(tmp_path, str(tiny_model), "textbook", "learning_rate = 1e-3"), registry)
    plan = make_plan(loaded, registry, str(tmp_path / "run"))
    assert plan.stages[0].settings.learning_rate == 1e-3 and not plan.stages[0].language_modelling
    default = make_plan(load_recipe(_recipe(tmp_path, str(tiny_model), "textbook"), registry), registry)
    assert default.stages[0].settings.learning_rate == 2e-4  # the kind's own seed value

    out = tmp_path / "out.txt"
    [result] = run_plan(plan, Console(file=open(out, "w"), width=200), registry)
    assert result.kind == "textbook" and result.steps == 2
    assert set(result.eval_before) == set(result.eval_after) == {"held"}
    assert result.eval_after["held"]["loss"] != result.eval_before["held"]["loss"]  # it trained
    stage = json.loads((tmp_path / "run" / "stages" / "read" / "stage.json").read_text())
    assert stage["data"]["tokens"] > 0 and stage["eval_perplexity_after"] == result.eval_after["held"]["perplexity"]
    assert (tmp_path / "run" / "stages" / "read" / "merged" / "config.json").is_file()
    assert "blocks to train on" in out.read_text()
    report = read_run(tmp_path / "run")
    assert report["stages"][0]["eval_perplexity_after"] is not None
    assert "read/held" in report["eval_matrix"]["sets"]


def test_a_kinds_options_are_validated_and_fingerprinted(tmp_path):
    from pydantic import BaseModel, ConfigDict

    from recipes.api import StageKind, hookimpl
    from recipes.run.fingerprint import stage_parts

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        strength: float = 1.0

    plugin = types.ModuleType("strength_plugin")
    plugin.register_stage_kinds = hookimpl(lambda: [StageKind("strong", "documents", {}, Options)])
    registry = get_registry(extra_plugins=(plugin,))
    from recipes.config.load import check_recipe

    checked = check_recipe(_recipe(tmp_path, "bundled:tiny-qwen2", "strong", "kind_options = {strenght = 2.0}"),
                           registry)
    assert any("kind_options.strenght: unknown option 'strenght'; did you mean \"strength\"" in str(p)
               for p in checked.problems), checked.problems
    parts = []
    for value in (2.0, 3.0):
        loaded = load_recipe(_recipe(tmp_path, "bundled:tiny-qwen2", "strong", f"kind_options = {{strength = {value}}}"),
                             registry)
        stage = make_plan(loaded, registry).stages[0]
        parts.append(stage_parts(make_plan(loaded, registry), stage, "base", registry, None))
    assert parts[0]["kind_options"] == {"strength": 2.0} and parts[1]["kind_options"] == {"strength": 3.0}
