"""The ``qa_markdown`` data format: the plugin's one hook."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

from pydantic import Field

from recipes.api import (ConversationOptions, DataFormat, Problem, RecipeError, conversation, hookimpl, read_table,
                         read_text_file)
from recipes_qa_markdown.markdown import MarkdownError, find_pairs

REQUIRES_RECIPES_API = 1  # the version of recipes.api this plugin is written for


class QAOptions(ConversationOptions):
    question_prefix: str = Field("Q:", min_length=1,
                                 description="What starts a question: '## Q: ...' or '**Q:** ...'.")
    answer_prefix: str = Field("A:", min_length=1, description="The bold answer marker: '**A:** ...'.")
    system: Optional[str] = Field(None, description="A system prompt for every pair (default: the template's).")


def read_qa(path: Path, options: QAOptions) -> Iterator[dict]:
    path = Path(path)
    if path.suffix.lower() == ".csv":
        pairs = _csv_pairs(path)
    elif path.suffix.lower() in (".md", ".markdown"):
        try:
            found = find_pairs(read_text_file(path), options.question_prefix, options.answer_prefix)
        except MarkdownError as exc:
            raise RecipeError(Problem(str(exc), file=str(path), line=exc.line)) from exc
        if not found:
            raise RecipeError(Problem(f"no question found: expected headings '## {options.question_prefix} ...' or "
                                      f"lines '**{options.question_prefix}** ...' (see the option question_prefix)",
                                      file=str(path)))
        pairs = [(f"{path}:{p.line}", p.question, p.answer) for p in found]
    else:
        raise RecipeError(Problem(f"qa_markdown reads .md and .csv files, not {path.suffix or 'files without suffix'}",
                                  file=str(path)))
    for where, question, answer in pairs:
        messages = [{"role": "system", "content": options.system}] if options.system else []
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        yield conversation(messages, options, {}, where, tools_column="tools")


def _csv_pairs(path: Path) -> list[tuple[str, str, str]]:
    pairs = []
    for where, row in read_table(path):
        if len(row) != 2:
            raise RecipeError(f"{where}: expected 2 columns (question, answer), the header has {len(row)}: "
                              f"{', '.join(row)}")
        question, answer = (str(v or "").strip() for v in row.values())
        if not question or not answer:
            raise RecipeError(f"{where}: empty {'question' if not question else 'answer'}")
        pairs.append((where, question, answer))
    return pairs


@hookimpl
def register_data_formats():
    return [DataFormat("qa_markdown", "conversations", read_qa, QAOptions,
                       "Question/answer pairs: Markdown FAQs ('## Q: ...' or '**Q:** / **A:**') and 2-column CSV.")]
