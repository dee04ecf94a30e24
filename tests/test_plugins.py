"""The plugin contract: every hook documented and implemented, real pluggy plugins, entry points."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
import types

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict

from conftest import write
from recipes.plugins import hookspecs
from recipes.cli import main
from recipes.errors import RecipeError
from recipes.plugins.hookspecs import DataFormat, hookimpl
from recipes.config.load import load_recipe
from recipes.planning.plan import make_plan
from recipes.plugins.registry import get_registry

HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
         if hasattr(fn, "recipes_spec")]


def test_every_hook_is_implemented_by_a_builtin():
    # (each hook's docstring and documentation: tests/test_hook_docs.py)
    assert sorted(HOOKS) == ["register_benchmark_scorers", "register_callbacks", "register_data_formats",
                             "register_exporters", "register_filters", "register_loss_functions",
                             "register_model_families", "register_quantization_backends", "register_stage_kinds"]
    registry = get_registry()
    implemented = {hook for name in registry.info for hook in registry.hooks_of(name)}
    for name in HOOKS:
        assert name in implemented, f"no built-in implements {name}"
    assert {"text", "alpaca", "messages"} <= set(registry.formats)
    assert {"none", "bitsandbytes"} <= set(registry.backends)
    assert {"progress", "metrics_jsonl"} <= set(registry.callbacks)
    assert {"chunked", "standard"} <= set(registry.losses)
    assert {"length", "script", "repeated_lines", "repeated_ngrams"} <= set(registry.filters)
    assert "builtin" in registry.scorers


class ShoutOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    suffix: str = "!"


def read_shout(path, options: ShoutOptions):
    for line in path.read_text().splitlines():
        question, answer = line.split("|")
        yield {"messages": [{"role": "user", "content": question},
                            {"role": "assistant", "content": answer.upper() + options.suffix}]}


def shout_plugin():
    plugin = types.ModuleType("shout_plugin")

    @hookimpl
    def register_data_formats():
        return [DataFormat("shout", "conversations", read_shout, ShoutOptions, "question|answer lines")]

    plugin.register_data_formats = register_data_formats
    return plugin


def test_a_registered_plugin_supplies_a_format_that_a_recipe_uses(tmp_path, tiny_model):
    from recipes.run.runner import run_plan
    from rich.console import Console

    # distinct pairs: repeated ones would be removed as exact copies before training
    write(tmp_path / "qa.txt", "".join(f"what do bees make ({i})|honey\nwho leads hive {i}|the queen\n" for i in range(4)))
    recipe = write(tmp_path / "r.toml", textwrap.dedent("""
        [model]
        path = "bundled:tiny-qwen2"
        [[stages]]
        name = "chat"
        kind = "sft"
        max_steps = 2
        per_device_train_batch_size = 2
        gradient_accumulation_steps = 1
        logging_steps = 1
        [[stages.data]]
        path = "qa.txt"
        format = "shout"
        options = { suffix = "!!" }
    """))
    with pytest.raises(RecipeError, match="unknown data format 'shout'"):
        load_recipe(str(recipe))
    registry = get_registry(extra_plugins=(shout_plugin(),))
    assert registry.hooks_of("shout_plugin") == ["register_data_formats"]
    loaded = load_recipe(str(recipe), registry)
    plan = make_plan(loaded, registry, str(tmp_path / "run"))
    [result] = run_plan(plan, Console(file=open(tmp_path / "out.txt", "w")), registry)
    assert result.steps == 2
    assert result.data["records"] == 8 and result.data["examples"] == 8
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert rows[0]["event"] == "run_start"


def test_plugin_options_are_validated_with_the_recipe(tmp_path):
    write(tmp_path / "qa.txt", "a|b\n")
    recipe = write(tmp_path / "r.toml", textwrap.dedent("""
        [model]
        path = "bundled:tiny-qwen2"
        [[stages]]
        name = "chat"
        kind = "sft"
        [[stages.data]]
        path = "qa.txt"
        format = "shout"
        options = { sufix = "?" }
    """))
    with pytest.raises(RecipeError) as info:
        load_recipe(str(recipe), get_registry(extra_plugins=(shout_plugin(),)))
    assert "r.toml:10:1: stages[0].data[0].options.sufix: unknown option 'sufix'; did you mean \"suffix\"?" \
        in str(info.value)


def _fake_distribution(root, name, module_source):
    """A real installed distribution on sys.path: a module and a dist-info with an entry point."""
    write(root / f"{name}.py", module_source)
    dist = root / f"{name}-1.2.3.dist-info"
    write(dist / "METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    write(dist / "entry_points.txt", f"[recipes.plugins]\n{name} = {name}\n")


def _cli(root, *args, env_extra=None):
    import os

    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "recipes", *args], capture_output=True, text=True, env=env)


def test_entry_point_plugin_is_loaded_and_listed(tmp_path):
    _fake_distribution(tmp_path, "bee_format", textwrap.dedent("""
        from recipes.plugins.hookspecs import DataFormat, hookimpl
        @hookimpl
        def register_data_formats():
            return [DataFormat("bees", "documents", lambda path, options: [], description="bee notes")]
    """))
    result = _cli(tmp_path, "plugins")
    assert result.returncode == 0, result.stderr
    assert "bee_format 1.2.3 (bee_format)" in result.stdout
    assert "format:bees: bee notes" in result.stdout
    # RECIPES_PLUGINS restricts which entry points load
    result = _cli(tmp_path, "plugins", env_extra={"RECIPES_PLUGINS": ""})
    assert result.returncode == 0 and "format:text" in result.stdout, result.stdout + result.stderr  # it listed
    assert "bee_format" not in result.stdout
    # a list loads those entry points and no other
    _fake_distribution(tmp_path, "wasp_format", textwrap.dedent("""
        from recipes.plugins.hookspecs import DataFormat, hookimpl
        @hookimpl
        def register_data_formats():
            return [DataFormat("wasps", "documents", lambda path, options: [], description="wasp notes")]
    """))
    result = _cli(tmp_path, "plugins")
    assert result.returncode == 0 and "format:wasps" in result.stdout, result.stdout + result.stderr
    result = _cli(tmp_path, "plugins", env_extra={"RECIPES_PLUGINS": "qwen, bee_format"})
    assert result.returncode == 0, result.stderr
    assert "format:bees" in result.stdout and "family:qwen" in result.stdout
    assert "wasp" not in result.stdout and "torchao" not in result.stdout


def test_a_plugin_that_fails_to_load_is_an_error_naming_it(tmp_path):
    _fake_distribution(tmp_path, "broken_plugin", "import does_not_exist_anywhere\n")
    result = _cli(tmp_path, "validate", "demo")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "plugin 'broken_plugin'" in result.stderr and "failed to load" in result.stderr
    assert "does_not_exist_anywhere" in result.stderr


def test_two_plugins_providing_the_same_name_are_refused():
    clash = types.ModuleType("clash")
    clash.register_data_formats = hookimpl(lambda: [DataFormat("text", "documents", lambda p, o: [])])
    with pytest.raises(RecipeError, match="data format 'text' is provided by two plugins"):
        get_registry(extra_plugins=(clash,))


def test_example_plugin_package_is_installed_and_works():
    """plugins/recipes-dolly-format, installed by the README's test command."""
    registry = get_registry()
    assert "dolly" in registry.info and "dolly" in registry.formats
    assert registry.info["dolly"].source == "recipes-dolly-format"


def test_the_dolly_plugin_reads_records_and_names_a_bad_one(tmp_path):
    dolly = get_registry().formats["dolly"]
    path = write(tmp_path / "d.jsonl", json.dumps({"instruction": "Name a bee.", "context": "Hives.",
                                                    "response": "Apis."}) + "\n" + json.dumps({"instruction": "x"}))
    options = dolly.options_model(context_position="before")
    records = dolly.read(path, options)
    first = next(records)
    assert first["messages"] == [{"role": "user", "content": "Hives.\n\nName a bee."},
                                 {"role": "assistant", "content": "Apis."}]
    with pytest.raises(RecipeError, match=r"d.jsonl:2: a dolly record needs 'response'"):
        next(records)


def test_cli_list_and_cp(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["list"])
    assert result.exit_code == 0 and "demo" in result.output and "domain_qwen_qlora" in result.output
    result = runner.invoke(main, ["cp", "domain_qwen", str(tmp_path / "mine.toml")])
    assert result.exit_code == 0, result.output
    assert load_recipe(str(tmp_path / "mine.toml")).recipe.model.path == "Qwen/Qwen2.5-7B"
    result = runner.invoke(main, ["cp", "domain_qwen", str(tmp_path / "mine.toml")])
    assert result.exit_code == 2 and "already exists" in result.output


def test_tryfirst_and_trylast_order_the_providers_through_pluggys_call_loop():
    """The registration hooks are called through pluggy (manager.hook), so a plugin's tryfirst and
    trylast hook implementations run first and last: a wrapper sees the results in that order."""
    import types

    order = []
    first, last, watcher = (types.ModuleType(name) for name in ("first_plugin", "last_plugin", "watcher"))
    first.register_data_formats = hookimpl(tryfirst=True)(
        lambda: [DataFormat("first", "documents", lambda path, options: [])])
    last.register_data_formats = hookimpl(trylast=True)(
        lambda: [DataFormat("last", "documents", lambda path, options: [])])

    @hookimpl(wrapper=True)
    def register_data_formats():
        results = yield
        order.extend(provider.name for result in results for provider in result)
        return results

    watcher.register_data_formats = register_data_formats
    # registered last and first: registration order alone would call them the other way round
    get_registry(extra_plugins=(last, watcher, first))
    assert order[0] == "first" and order[-1] == "last" and "text" in order[1:-1], order
