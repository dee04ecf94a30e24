"""The installed plugin through the real host: each type of document becomes its text, a record per
document or per section; a damaged file is an error naming it, or a counted skip; `recipes validate`
looks at the files without converting them (neither markitdown nor torch imported) and names a folder
that holds nothing the format reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest
from click.testing import CliRunner

from documents_support import caches, corpus, docx, epub, html, pdf, pptx, xlsx  # noqa: F401 (caches: autouse)
from recipes.api import RecipeError
from recipes.bad_records import BadRecords, policy
from recipes.cli import main
from recipes.plugins.registry import get_registry
from recipes_documents.sections import split_sections


def read(path, **options):
    provider = get_registry().formats["documents"]
    return list(provider.read(path, provider.options_model(**options)))


def recipe(folder, path: str, **stage) -> str:
    settings = "".join(f"{key} = {json.dumps(value)}\n" for key, value in stage.items())
    text = (f'name = "docs"\n[model]\npath = "bundled:tiny-qwen2"\n\n[[stages]]\nname = "domain"\nkind = "pretrain"\n'
            f'{settings}\n[[stages.data]]\npath = "{path}"\nformat = "documents"\n')
    (folder / "r.toml").write_text(text, encoding="utf-8")
    return str(folder / "r.toml")


def test_the_plugin_is_loaded_from_its_entry_point():
    registry = get_registry()
    assert registry.info["documents"].source == "recipes-documents"
    fmt = registry.formats["documents"]
    assert fmt.yields == "documents" and {".pdf", ".docx", ".pptx", ".xlsx", ".html", ".epub", ".md"} <= set(fmt.suffixes)


def test_each_type_becomes_its_text(tmp_path):
    expected = corpus(tmp_path)
    found = {path.name: read(path) for path in sorted(tmp_path.rglob("*.*"))}
    assert {name: [r["text"] for r in records] for name, records in found.items()} == \
        {name: [text] for name, text in expected.items()}
    assert found["regulation.pdf"][0]["_where"] == str(tmp_path / "archive" / "regulation.pdf")
    assert "tracking" not in found["guide.html"][0]["text"]  # the page's script and style are not text
    legacy = tmp_path / "gbk.html"  # a Chinese page saved in GBK, as older sites are: its meta tag says so
    legacy.write_bytes('<html><head><meta charset="gbk"></head><body><h1>养蜂条例</h1><p>每个蜂箱必须登记。</p>'
                       '</body></html>'.encode("gbk"))
    more = {
        legacy: "# 养蜂条例\n\n每个蜂箱必须登记。",
        epub(tmp_path / "book.epub", "Bee book", [("Chapter one", "Queens lay eggs."), ("Chapter two", "Drones.")]):
            "**Title:** Bee book\n\n# Chapter one\n\nQueens lay eggs.\n\n# Chapter two\n\nDrones.",
        pptx(tmp_path / "talk.pptx", [("Hives", "Ten colonies"), ("Honey", "Two harvests")]):
            "# Hives\nTen colonies\n\n# Honey\nTwo harvests",  # markitdown's slide-number comments dropped
        xlsx(tmp_path / "counts.xlsx", {"Hives": [["name", "frames"], ["north", 12]]}):
            "## Hives\n| name | frames |\n| --- | --- |\n| north | 12 |",
    }
    assert {path.name: [r["text"] for r in read(path)] for path in more} == \
        {path.name: [text] for path, text in more.items()}


def test_split_by_section_cuts_at_headings(tmp_path):
    path = docx(tmp_path / "manual.docx", [(0, "Read this first."), (1, "Part one"), (2, "Setup"), (0, "Unpack it."),
                                          (2, "Use"), (0, "Switch it on."), (1, "Part two"), (0, "Care.")])
    sections = read(path, split="section")
    assert [r["text"] for r in sections] == ["Read this first.", "# Part one\n\n## Setup\n\nUnpack it.",
                                             "## Use\n\nSwitch it on.", "# Part two\n\nCare."]
    assert [r["_where"] for r in sections] == [f"{path}#{n}" for n in range(1, 5)]
    assert [r["text"] for r in read(path, split="section", heading_level=1)] == [
        "Read this first.", "# Part one\n\n## Setup\n\nUnpack it.\n\n## Use\n\nSwitch it on.", "# Part two\n\nCare."]
    assert split_sections("```\n# not a heading\n```\ntext\n# A\nbody\n# End", 2) == [
        "```\n# not a heading\n```\ntext", "# A\nbody\n\n# End"]


def damaged(folder):
    """Files that look like documents and are not: each with the words its error must say."""
    good = docx(folder / "good.docx", [(0, "fine")]).read_bytes()
    (folder / "cut.docx").write_bytes(good[: len(good) // 2])
    whole = pdf(folder / "whole.pdf", ["Page text"]).read_bytes()
    (folder / "cut.pdf").write_bytes(whole[:-30])
    (folder / "blank.html").write_bytes(b"")
    (folder / "~$good.docx").write_bytes(b"\x05owner" + b" " * 150)
    with zipfile.ZipFile(folder / "garbled.docx", "w") as z:  # a zip with its parts, but no XML inside
        z.writestr("[Content_Types].xml", "x")
        z.writestr("word/document.xml", "this is not XML")
    (folder / "scan.pdf").write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n")
    return {"cut.docx": "its zip is damaged or cut short", "cut.pdf": "a PDF cut short (no %%EOF",
            "blank.html": "an empty file", "~$good.docx": "an Office owner file", "garbled.docx": "markitdown could not convert it",
            "scan.pdf": "no text in it"}


def test_a_damaged_file_is_an_error_naming_it_or_a_counted_skip(tmp_path):
    for name, words in damaged(tmp_path).items():
        with pytest.raises(RecipeError) as error:
            read(tmp_path / name)
        [line] = str(error.value).splitlines()
        assert line.startswith(f"{tmp_path / name}: ") and words in line and 'on_bad_record = "skip"' in line, line
    bad = BadRecords(skip=True, limit=10)
    with policy(bad):
        records = [r for name in ("good.docx", "cut.pdf", "garbled.docx") for r in read(tmp_path / name)]
    assert [r["text"] for r in records] == ["fine"]
    assert bad.count == 2 and bad.first[0].startswith(f"{tmp_path / 'cut.pdf'}: a PDF cut short")
    with pytest.raises(RecipeError, match=r"the documents format reads .*not \.doc: convert it"):
        read(tmp_path / "old.doc")  # named alone: refused, never skipped


def test_validate_looks_without_converting_and_names_bad_files_and_empty_folders(tmp_path):
    corpus(tmp_path / "docs")
    (tmp_path / "docs" / "photo.png").write_bytes(b"\x89PNG")  # not a document: the folder leaves it out
    script = ("import sys\nfrom recipes.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
              "    print('exit', e.code, sorted(m for m in ('torch', 'transformers', 'markitdown') if m in sys.modules))\n")
    run = lambda *args: subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)  # noqa: E731
    good = run("validate", recipe(tmp_path, "docs/"))
    assert "data docs/ (documents): 4 file(s)" in good.stdout and good.stdout.strip().endswith("exit 0 []"), good
    cut = tmp_path / "docs" / "archive" / "cut.pdf"
    cut.write_bytes(b"%PDF-1.4\n1 0 obj")
    refused = CliRunner().invoke(main, ["validate", recipe(tmp_path, "docs/**/*.pdf")])
    assert refused.exit_code == 2 and f"{cut}: a PDF cut short" in refused.output, refused.output
    skipped = CliRunner().invoke(main, ["validate", recipe(tmp_path, "docs/", on_bad_record="skip",
                                                           max_bad_records=1)])
    assert skipped.exit_code == 0 and f'on_bad_record = "skip": 1 bad records skipped (first: {cut}' \
        in " ".join(skipped.output.split()), skipped.output
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "hive.jpg").write_bytes(b"\xff\xd8")
    empty = CliRunner().invoke(main, ["validate", recipe(tmp_path, "pictures")])
    assert empty.exit_code == 2 and "stages[0].data[0].path: 'pictures' holds no file that format 'documents' reads" \
        in empty.output and "(.jpg)" in empty.output, empty.output


def test_without_markitdown_the_error_is_one_line_naming_what_to_install(tmp_path):
    corpus(tmp_path / "docs")
    script = ("import sys\nsys.modules['markitdown'] = None  # as if the plugin were installed without it\n"
              "from recipes.cli import main\nmain(sys.argv[1:])\n")
    result = subprocess.run([sys.executable, "-c", script, "validate", recipe(tmp_path, "docs/")],
                            capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() + result.stderr.splitlines() if line.startswith("error")]
    assert result.returncode == 2 and len(lines) == 1, result
    assert "needs markitdown, not installed: pip install 'markitdown[docx,pdf,pptx,xlsx]==0.1.9'" in lines[0]


def test_a_recipe_naming_the_format_without_the_plugin_is_told_what_to_install(tmp_path):
    corpus(tmp_path / "docs")
    result = subprocess.run([sys.executable, "-m", "recipes", "validate", recipe(tmp_path, "docs/")], capture_output=True,
                            text=True, env={**os.environ, "RECIPES_PLUGINS": "qwen"})  # the built-ins alone
    assert result.returncode == 2 and "unknown data format 'documents'; the plugin package recipes-documents " \
        "provides it: pip install -e plugins/recipes-documents" in " ".join(result.stderr.split()), result.stderr
