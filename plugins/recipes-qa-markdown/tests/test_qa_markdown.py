"""The installed plugin, through the real host: the registry finds it by its entry point, `recipes
validate` checks its options, and its records become labelled tokens with the genuine Qwen tokenizer."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from recipes.api import RecipeError
from recipes.cli import main
from recipes.data.tokenization import IGNORE_INDEX, DataStats, sft_examples
from recipes.plugins.registry import get_registry

# no conftest.py here: run beside the host's tests, a second module named conftest would shadow theirs
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="module")
def tokenizer():
    from qwen_recipes.tokenizer import build_qwen_tokenizer

    return build_qwen_tokenizer()

FAQ = """# Beekeeping FAQ

Answers to what new keepers ask.

## Q: When do bees swarm?
In late spring, when the colony outgrows its hive.

### Signs
Queen cells along the frames' lower edges.

## Q: Do bees sleep?

Yes, in short spells.

```markdown
## Q: this heading is quoted, not a question
```

## About this page
Written by the club.

**Q:** How much honey does a hive give?
**A:** 10 to 30 kg a year,
depending on the season.

**Q:** Is the
question long?
**A:** It may run over lines.
"""


def read(path, **options):
    provider = get_registry().formats["qa_markdown"]
    return list(provider.read(path, provider.options_model(**options)))


def test_the_plugin_is_loaded_from_its_entry_point():
    registry = get_registry()
    assert registry.info["qa_markdown"].source == "recipes-qa-markdown"
    assert registry.formats["qa_markdown"].yields == "conversations"


def test_markdown_headings_and_bold_markers(tmp_path):
    path = tmp_path / "faq.md"
    path.write_text(FAQ, encoding="utf-8")
    records = read(path)
    pairs = [(r["messages"][0]["content"], r["messages"][1]["content"], r["_where"]) for r in records]
    assert pairs == [
        ("When do bees swarm?", "In late spring, when the colony outgrows its hive.\n\n### Signs\n"
                                "Queen cells along the frames' lower edges.", f"{path}:5"),
        ("Do bees sleep?", "Yes, in short spells.\n\n```markdown\n## Q: this heading is quoted, not a question\n```",
         f"{path}:11"),
        ("How much honey does a hive give?", "10 to 30 kg a year,\ndepending on the season.", f"{path}:22"),
        ("Is the question long?", "It may run over lines.", f"{path}:26"),
    ]


def test_csv_pairs_a_system_prompt_and_labels(tmp_path, tokenizer):
    path = tmp_path / "faq.csv"
    path.write_text("question,answer\nWhat is propolis?,Bee glue.\n", encoding="utf-8")
    [record] = read(path, system="You know bees.")
    assert record["_where"] == f"{path}:2"
    [example] = sft_examples([record], tokenizer, 512, DataStats())
    text = tokenizer.decode(example["input_ids"])
    assert text.startswith("<|im_start|>system\nYou know bees.<|im_end|>\n<|im_start|>user\nWhat is propolis?")
    learned = [t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE_INDEX]
    assert tokenizer.decode(learned) == "Bee glue.<|im_end|>"
    [everything] = sft_examples(read(path, train_on_prompt=True), tokenizer, 512, DataStats())
    assert everything["labels"][:-1] == everything["input_ids"][:-1]


@pytest.mark.parametrize("name, content, message", [
    ("a.md", "## Q: Empty?\n## Q: Next\nyes\n", r"a.md:1: the question 'Empty\?' has no answer"),
    ("b.md", "intro\n**A:** orphan\n", r"b.md:2: an answer marker \*\*A:\*\* without a question"),
    ("c.md", "# Title\nno questions here\n", r"c.md: no question found: expected headings '## Q: ...'"),
    ("d.csv", "q,a,extra\nx,y,z\n", r"d.csv:2: expected 2 columns \(question, answer\), the header has 3"),
    ("e.csv", "q,a\nx,\n", r"e.csv:2: empty answer"),
    ("f.txt", "x", r"f.txt: qa_markdown reads .md and .csv files, not .txt"),
])
def test_bad_files_name_the_place(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(RecipeError, match=message):
        read(path)


def test_recipes_validate_checks_the_plugin_options(tmp_path):
    (tmp_path / "faq.md").write_text(FAQ, encoding="utf-8")
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "t"\n[model]\npath = "bundled:tiny-qwen2"\n\n[[stages]]\nname = "sft"\nkind = "sft"\n\n'
                      '[[stages.data]]\npath = "faq.md"\nformat = "qa_markdown"\n'
                      'options = { question_prefx = "Q:" }\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert result.exit_code == 2, result.output
    assert "r.toml:12:1: stages[0].data[0].options.question_prefx" in result.output
    assert "did you mean \"question_prefix\"" in result.output
