"""The documentation site builds with `mkdocs build --strict` (every nav entry, link and anchor
resolves), and its generated pages say what the code says: every key of `recipes schema` is in the
recipe reference, every key of the LLaMA-Factory importer's table on its page, every command's help
on the commands page. A broken link fails the same build (the control)."""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, cwd=config.parent,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    done = build(ROOT / "mkdocs.yml", site)
    assert done.returncode == 0, done.stderr[-4000:]
    return site


def page_text(site: Path, name: str) -> str:
    return html.unescape((site / name / "index.html").read_text(encoding="utf-8"))


def schema_keys(node, found=None) -> set[str]:
    """Every property name anywhere in a JSON Schema: the recipe's, its $defs, the plugins' if/then."""
    found = set() if found is None else found
    if isinstance(node, dict):
        found.update(node.get("properties", {}) if isinstance(node.get("properties"), dict) else {})
        for value in node.values():
            schema_keys(value, found)
    elif isinstance(node, list):
        for value in node:
            schema_keys(value, found)
    return found


def test_the_reference_lists_every_key_of_recipes_schema(site):
    from recipes.cli import main

    schema = json.loads(CliRunner().invoke(main, ["schema"]).output)
    keys = schema_keys(schema)
    assert {"lora_rank", "stages", "text_field", "bits", "chunk_size", "timeout_minutes"} <= keys
    reference = page_text(site, "reference")
    rows = set(re.findall(r"<tr>\s*<td><code>([\w.-]+)</code></td>", reference))
    assert keys - rows == set(), "keys of `recipes schema` missing from the reference page"
    kinds = schema["$defs"]["Stage"]["properties"]["kind"]
    for kind in kinds.get("enum", []):
        assert f"<code>{kind}</code>" in reference


def test_the_llamafactory_page_is_the_importers_table(site):
    from recipes.config.importing import llamafactory_keys as keys

    page = page_text(site, "llamafactory")
    render = getattr(keys, "render_key_table", None)
    if callable(render):  # the importer renders its own table: every key it names is on the page
        named = set(re.findall(r"^\|\s*`([\w.]+)`", render(), flags=re.M))
    else:
        named = set(getattr(keys, "SETTINGS", {})) | set(getattr(keys, "LEFT_OUT", {}))
    assert len(named) >= 10, "the importer's table is (nearly) empty"
    assert {key for key in named if f"<code>{key}</code>" not in page} == set()


def test_the_commands_page_has_every_commands_help(site):
    import click

    from recipes.cli import main

    page = page_text(site, "commands")
    ctx = click.Context(main, info_name="recipes")
    for name in main.list_commands(ctx):
        assert f"recipes {name}" in page and main.get_command(ctx, name).get_short_help_str(200)[:30] in page


def load_generators():
    spec = importlib.util.spec_from_file_location("docs_generated", ROOT / "docs" / "_hooks" / "generated.py")
    generated = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generated)
    return generated


def test_the_importers_own_rendering_of_its_table_wins(monkeypatch):
    from recipes.config.importing import llamafactory_keys

    generated = load_generators()
    monkeypatch.setattr(llamafactory_keys, "render_key_table", lambda: "| `some_key` | what it becomes |", raising=False)
    assert generated.llamafactory_keys() == "| `some_key` | what it becomes |"
    monkeypatch.delattr(llamafactory_keys, "render_key_table")
    assert "| `lora_rank` | `lora_rank` |" in generated.llamafactory_keys()


def test_pages_being_written_elsewhere_join_the_nav_only_when_present(tmp_path):
    generated = load_generators()
    (tmp_path / "gpus.md").write_text("# GPUs\n")
    nav = [{"Home": "index.md"}, {"Guides": [{"Real models": "models-and-gpus.md"}, {"Data": "data.md"}]}]
    optional = [{"page": "gpus.md", "title": "GPUs", "after": "models-and-gpus.md"},
                {"page": "mixing.md", "title": "Mixing", "after": "data.md"}]
    assert generated.with_optional_pages(nav, optional, tmp_path) == [
        {"Home": "index.md"}, {"Guides": [{"Real models": "models-and-gpus.md"}, {"GPUs": "gpus.md"}, {"Data": "data.md"}]}]
    # listed once, even when the nav names it already
    assert generated.with_optional_pages(nav, optional, tmp_path) == nav


def test_a_broken_link_fails_the_strict_build(tmp_path):
    """The control: the same build with one link to a page that does not exist fails."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    (tmp_path / "bench").mkdir()
    shutil.copy(ROOT / "bench" / "RESULTS.md", tmp_path / "bench" / "RESULTS.md")
    with open(tmp_path / "docs" / "errors.md", "a", encoding="utf-8") as page:
        page.write("\nSee [the missing page](no-such-page.md).\n")
    done = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0 and "no-such-page.md" in done.stderr


def test_the_plugins_page_lists_every_hook_of_the_contract(site):
    import inspect

    from recipes.plugins import hookspecs

    hooks = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "recipes_spec")]
    page = page_text(site, "plugins")
    assert len(hooks) >= 5 and [h for h in hooks if f'href="../plugin_hooks/#{h}"' not in page] == []


def test_the_memory_tables_are_what_recipes_plan_prints(site):
    from recipes.cli import main

    page = page_text(site, "models-and-gpus")
    for name in ("domain_qwen", "domain_qwen_qlora"):
        printed = CliRunner().invoke(main, ["plan", name], env={"COLUMNS": "300"}).output.splitlines()
        first_stage = printed[:next(i for i, line in enumerate(printed) if line.startswith("2. "))]
        assert len(first_stage) > 10 and [line for line in first_stage if line.strip() not in page] == []
