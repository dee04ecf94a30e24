"""The plugin contract's documentation is tested: every hook has a docstring, a section with a worked
example in docs/plugin_hooks.md that really registers through the host, and tests that exercise it
with a real plugin. A new hook without any of these fails here."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import re
import types
from pathlib import Path

import pytest

from recipes.errors import RecipeError
from recipes.plugins import hookspecs
from recipes.plugins.registry import get_registry

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "plugin_hooks.md"
HOOKS = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "recipes_spec"))

# hook -> (the registry table its providers land in, the example's provider name, tests with a real plugin)
CONTRACT = {
    "register_data_formats": ("formats", "faq", [
        "tests/test_plugins.py::test_a_registered_plugin_supplies_a_format_that_a_recipe_uses",
        "tests/test_plugins.py::test_entry_point_plugin_is_loaded_and_listed",
        "plugins/recipes-qa-markdown/tests/test_qa_markdown.py::test_the_plugin_is_loaded_from_its_entry_point"]),
    "register_quantization_backends": ("backends", "lowmem", [
        "tests/test_quantization.py::test_each_bitsandbytes_setting_loads_and_trains_on_cpu",
        "tests/test_hook_docs.py::test_a_third_party_backend_and_loss_train_a_stage",
        "tests/test_hook_docs.py::test_a_backends_bytes_per_weight_is_what_plan_counts",
        "plugins/recipes-torchao/tests/test_torchao.py::test_the_demo_trains_both_stages_on_torchao_layers_and_merges_plain_weights"]),
    "register_callbacks": ("callbacks", "step_printer", [
        "tests/test_demo_qlora.py::test_both_stages_train_lora_on_bitsandbytes_4bit_layers",
        "tests/test_resume.py::test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint",
        "tests/test_hook_docs.py::test_a_callbacks_finish_runs_once_after_the_report",
        "plugins/recipes-mlflow/tests/test_mlflow_tracker.py::test_a_two_stage_run_leaves_both_stages_in_the_file_store"]),
    "register_loss_functions": ("losses", "plain", [
        "tests/test_chunked_loss.py::test_a_plugin_on_the_same_hook_provides_a_loss_and_the_builtins_build",
        "tests/test_hook_docs.py::test_a_third_party_backend_and_loss_train_a_stage",
        "plugins/recipes-liger/tests/test_liger.py::test_a_real_run_on_cpu_is_refused_with_one_line"]),
    "register_benchmark_scorers": ("scorers", "first_choice", [
        "tests/test_benchmarks_files.py::test_a_scorer_plugin_scores_into_the_same_rows",
        "plugins/recipes-lm-eval/tests/test_lm_eval.py::test_lm_eval_scores_the_same_items_in_process"]),
    "register_exporters": ("exporters", "npz", [
        "tests/test_export_formats.py::test_the_documented_exporter_writes_through_recipes_export",
        "tests/test_export_gguf.py::test_q8_0_from_the_demo_run_reads_back_as_qwen2_within_its_bound"]),
    "register_model_families": ("families", "chatml-demo", [
        "tests/test_hook_docs.py::test_the_family_comes_from_its_plugin_and_a_second_one_is_refused"]),
    "register_stage_kinds": ("kinds", "textbook", [
        "tests/test_stage_kinds.py::test_the_documented_third_party_kind_registers_and_runs_a_stage",
        "tests/test_stage_kinds.py::test_the_builtin_kinds_are_plugins_and_plugins_lists_them",
        "plugins/recipes-trl/tests/test_preference_run.py::test_pretrain_sft_dpo_runs_on_llamafactory_ranking_data"]),
    "register_filters": ("filters", "boilerplate", [
        "tests/test_cleaning.py::test_the_documented_filter_removes_what_it_names_through_recipes_prepare",
        "tests/test_cleaning.py::test_near_dedup_is_one_corpus_filter_per_stage_fed_again_from_a_ready_store",
        "tests/test_cleaning.py::test_each_builtin_filter_removes_its_case_and_keeps_a_control"]),
}


def _sections() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    parts = re.split(r"^## (\w+)\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def _example(section: str) -> types.ModuleType:
    [code] = re.findall(r"```python\n(.*?)```", section, flags=re.S)[-1:]
    module = types.ModuleType("doc_example")
    exec(compile(code, str(DOC), "exec"), module.__dict__)
    return module


def test_every_hook_has_a_docstring_a_doc_section_and_a_contract_entry():
    assert HOOKS == sorted(CONTRACT), "add the new hook to CONTRACT (and docs/plugin_hooks.md, and its tests)"
    sections = _sections()
    assert sorted(sections) == HOOKS, "docs/plugin_hooks.md has a '## hook' section per hook and no other"
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc and len(doc) > 40, f"hook {name} has no docstring"
        assert "```python" in sections[name], f"docs/plugin_hooks.md: {name} has no worked example"


@pytest.mark.parametrize("hook", [h for h in sorted(CONTRACT) if h != "register_model_families"])
def test_each_worked_example_registers_through_the_host(hook):
    table, provided, _ = CONTRACT[hook]
    example = _example(_sections()[hook])
    registry = get_registry(extra_plugins=(example,))
    assert provided in getattr(registry, table)
    assert registry.hooks_of("doc_example") == [hook]


def test_every_hook_is_exercised_by_tests_that_exist():
    for hook, (_, _, tests) in CONTRACT.items():
        assert tests, hook
        for node in tests:
            path, name = node.split("::")
            tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
            names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
            assert name in names, f"{hook}: {node} does not exist"


def test_the_family_comes_from_its_plugin_and_a_second_one_is_refused():
    registry = get_registry()
    assert registry.family.name == "qwen" and registry.family.turn_end == "<|im_end|>"
    assert "family:qwen" in registry.provided_by("qwen")
    second = get_registry(extra_plugins=(_example(_sections()["register_model_families"]),))
    assert set(second.families) == {"qwen", "chatml-demo"}
    with pytest.raises(RecipeError, match="exactly one model family plugin .found: chatml-demo, qwen"):
        second.family


def test_a_plugin_needing_a_newer_api_is_refused_naming_it():
    plugin = types.ModuleType("future_plugin")
    plugin.REQUIRES_RECIPES_API = 99
    with pytest.raises(RecipeError, match="plugin 'future_plugin'.*needs version 99 of recipes' plugin API"):
        get_registry(extra_plugins=(plugin,))


def test_hook_wrappers_see_every_result_through_pluggys_call_loop():
    seen = []
    plugin = types.ModuleType("watcher")

    @hookspecs.hookimpl(wrapper=True)
    def register_loss_functions():
        results = yield
        seen.extend(p.name for result in results for p in result)
        return results

    plugin.register_loss_functions = register_loss_functions
    get_registry(extra_plugins=(plugin,))
    assert {"chunked", "standard"} <= set(seen)


def test_a_third_party_backend_and_loss_train_a_stage(tmp_path, tiny_model):
    """The documented backend and loss examples, registered as plugins, train a real stage."""
    import json

    from rich.console import Console

    from conftest import write
    from recipes.config.load import load_recipe
    from recipes.planning.plan import make_plan
    from recipes.run.runner import run_plan

    sections = _sections()
    plugins = (_example(sections["register_quantization_backends"]), _example(sections["register_loss_functions"]))
    for index, plugin in enumerate(plugins):
        plugin.__name__ = f"doc_example_{index}"
    # call recorders around the examples' functions (the hooks look them up when they register): the
    # host must really load through the backend and compute each step's loss with the plugin's function
    calls = {"half_kwargs": 0, "build_plain": 0, "loss": 0}
    backend, loss = plugins
    half_kwargs, build_plain = backend.half_kwargs, loss.build_plain

    def recorded_half_kwargs(options, dtype):
        calls["half_kwargs"] += 1
        return half_kwargs(options, dtype)

    def recorded_build_plain(model, options):
        calls["build_plain"] += 1
        built = build_plain(model, options)

        def recorded_loss(*args, **kwargs):
            calls["loss"] += 1
            return built(*args, **kwargs)

        return recorded_loss

    backend.half_kwargs, loss.build_plain = recorded_half_kwargs, recorded_build_plain
    registry = get_registry(extra_plugins=plugins)
    write(tmp_path / "notes.txt", "".join(f"Bees keep the hive warm in winter, note {i}.\n" for i in range(40)))
    recipe = write(tmp_path / "r.toml", f"""
[model]
path = "{tiny_model}"
[quantization]
backend = "lowmem"
[[stages]]
name = "domain"
kind = "pretrain"
loss = "plain"
cutoff_len = 32
max_steps = 2
per_device_train_batch_size = 2
gradient_accumulation_steps = 1
learning_rate = 1e-3
[[stages.data]]
path = "notes.txt"
format = "text"
""")
    plan = make_plan(load_recipe(str(recipe), registry), registry, str(tmp_path / "run"))
    [result] = run_plan(plan, Console(file=open(tmp_path / "out.txt", "w")), registry)
    assert result.steps == 2 and result.first_loss is not None
    assert calls == {"half_kwargs": 1, "build_plain": 1, "loss": 2}, calls  # one stage, two steps
    recorded = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert recorded["quantization"]["backend"] == "lowmem" and recorded["stages"][0]["settings"]["loss"] == "plain"


def test_a_backends_bytes_per_weight_is_what_plan_counts(tmp_path):
    """QuantizationBackend.bytes_per_weight: plan counts the linear layers at the backend's bytes and
    the rest at the stage's precision; a backend without it is counted unquantized."""
    from conftest import write
    from qwen_recipes.shapes import shape_of
    from qwen_recipes.tiny import CONFIG
    from recipes.api import NoOptions, QuantizationBackend
    from recipes.config.load import load_recipe
    from recipes.planning.estimate import recipe_estimate
    from recipes.planning.plan import make_plan

    seen = []

    def three_quarters(options, precision):
        seen.append(precision)
        return 0.75

    plugin = types.ModuleType("half_byte_plugin")
    plugin.register_quantization_backends = hookspecs.hookimpl(lambda: [
        QuantizationBackend("threequarters", lambda o, d: {}, lambda m, o, g: m, NoOptions, quantizes=True,
                            bytes_per_weight=three_quarters),
        QuantizationBackend("plain", lambda o, d: {}, lambda m, o, g: m, NoOptions)])
    registry = get_registry(extra_plugins=(plugin,))
    write(tmp_path / "notes.txt", "Bees keep the hive warm in winter.\n" * 4)

    def weights(backend: str) -> int:
        recipe = write(tmp_path / f"{backend}.toml", f'[model]\npath = "bundled:tiny-qwen2"\n[quantization]\n'
                       f'backend = "{backend}"\n[[stages]]\nname = "d"\nkind = "pretrain"\nprecision = "bf16"\n'
                       '[[stages.data]]\npath = "notes.txt"\nformat = "text"\n')
        loaded = load_recipe(str(recipe), registry)
        return recipe_estimate(loaded, make_plan(loaded, registry), "cuda")["stages"][0]["memory"]["weights"]

    shape = shape_of({"model_type": "qwen2", **CONFIG})
    linear = shape.linear_parameters
    assert weights("threequarters") == math.ceil(linear * 0.75) + (shape.total_parameters - linear) * 2
    assert seen == ["bf16"]
    assert weights("plain") == shape.total_parameters * 2


def test_a_callbacks_finish_runs_once_after_the_report(tmp_path, tiny_model, monkeypatch):
    """CallbackPlugin.finish: `recipes run` calls it once, after the report's PNGs exist, with the run's
    name and stages (the documented example, registered as a plugin, run through the real CLI)."""
    from click.testing import CliRunner

    from conftest import write
    from recipes.cli import main
    from recipes.plugins import registry as registry_module

    example = _example(_sections()["register_callbacks"])
    seen = []
    printer = example.register_callbacks()[0]

    def finish(context):
        seen.append((context.run_name, context.stage_names, sorted(p.name for p in context.report_dir.glob("*.png"))))
        printer.finish(context)

    plugin = types.ModuleType("finishing_plugin")
    plugin.register_callbacks = hookspecs.hookimpl(lambda: [dataclasses.replace(printer, finish=finish)])
    monkeypatch.setattr(registry_module, "_cached", get_registry(extra_plugins=(plugin,)))
    write(tmp_path / "notes.txt", "".join(f"Bees keep the hive warm in winter, note {i}.\n" for i in range(40)))
    recipe = write(tmp_path / "r.toml", f"""name = "bees"
callbacks = ["metrics_jsonl", "step_printer"]
[model]
path = "{tiny_model}"
[[stages]]
name = "domain"
kind = "pretrain"
cutoff_len = 32
max_steps = 2
logging_steps = 1
[[stages.data]]
path = "notes.txt"
format = "text"
""")
    result = CliRunner().invoke(main, ["run", str(recipe), "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert seen == [("bees", ("domain",), ["loss.png"])]
    assert "domain: step 2" in result.output
    assert f"bees: 1 stages, report in {tmp_path / 'run' / 'report'}" in result.output.replace("\n", "")
