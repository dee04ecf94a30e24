"""What a reader copies from the README and the documentation works: every TOML block validates (or
is marked as a fragment, whose keys the schema must know), every `recipes ...` command exists with the
options shown; a page with broken snippets fails the same checks; the README stays a landing page
whose test command is the one CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from doc_snippets import check_page, code_blocks, commands

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md") if "_hooks" not in p.parts)]
BROKEN = ROOT / "tests" / "fixtures" / "docs" / "broken_snippets.md"


@pytest.fixture(scope="module")
def host():
    from recipes.cli import main
    from recipes.config.json_schema import recipe_schema
    from recipes.plugins.registry import get_registry

    registry = get_registry()
    return registry, recipe_schema(registry), main


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_snippet_of_the_page_holds(page, host, tmp_path):
    assert check_page(page, *host, tmp_path) == []


def test_the_pages_show_recipes_and_commands_to_check():
    """The checks above cover something: whole recipes, fragments and commands on many pages."""
    blocks = [b for page in PAGES for b in code_blocks(page) if b.lang == "toml"]
    assert sum(b.mark is None for b in blocks) >= 2 and sum(b.mark == "fragment" for b in blocks) >= 4
    shown = [text.split()[0] for page in PAGES for _, text in commands(page)]
    assert {"run", "validate", "plan", "prepare", "report", "export", "chat", "import", "data"} <= set(shown)


def test_a_page_with_broken_snippets_fails_each_check(host, tmp_path):
    problems = check_page(BROKEN, *host, tmp_path)
    lines = BROKEN.read_text().splitlines()

    def line_of(text: str, after: int = 0) -> int:
        return next(n for n, line in enumerate(lines, start=1) if n > after and text in line)

    expected = {
        line_of("lora_rnak"): "unknown key 'lora_rnak'",
        line_of("stratgy"): "distributed.stratgy: unknown key 'stratgy'",
        line_of("text_feld"): "unknown key 'text_feld'",
        line_of("[project") : "not TOML",
        line_of("recipes validat"): "`recipes validat`: no such command",
        line_of("--gpus"): "no option --gpus",
        line_of("--too"): "no option --too",
    }
    found = {int(re.match(r"broken_snippets\.md:(\d+):", p).group(1)): p for p in problems}
    for line, words in expected.items():
        assert line in found and words in found[line], (line, words, problems)
    # the control fragment, the good command and the good span gave nothing
    assert len(problems) == len(expected), problems


def test_the_readme_is_a_landing_page_whose_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    blocks = [b.text.strip() for b in code_blocks(ROOT / "README.md")]
    assert ci in blocks, "the README's test command must be exactly .ci/run's"
    assert any(b.startswith("python3 -m venv .venv") and b.endswith("/recipes run demo") for b in blocks)
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme):
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"
