"""Finding question/answer pairs in a Markdown file.

Two ways FAQs are written: a heading per question (``## Q: ...``, the answer is the text up to the next
heading of the same or a higher level), or bold markers (``**Q:** ...`` / ``**A:** ...``, each may run
over several lines). Lines inside code fences are never markers, so an answer may quote Markdown.
Pure text processing: no recipes import, so it is easy to test on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass
class Pair:
    question: str
    answer: str
    line: int  # where the question starts, 1-based


class MarkdownError(ValueError):
    """A malformed FAQ: ``line`` says where."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line


def find_pairs(text: str, question_prefix: str = "Q:", answer_prefix: str = "A:") -> list[Pair]:
    q, a = re.escape(question_prefix), re.escape(answer_prefix)
    heading = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
    heading_question = re.compile(rf"^{q}\s*(.*)$")
    bold_question = re.compile(rf"^\*\*{q}\*\*\s*(.*)$|^\*\*{q}\s*(.*?)\*\*\s*$")
    bold_answer = re.compile(rf"^\*\*{a}\*\*\s*(.*)$")

    pairs: list[Pair] = []
    current = None  # [question lines, answer lines or None, line, heading level or None]
    fenced = False

    def close(at: int) -> None:
        nonlocal current
        if current is None:
            return
        question, answer, line, _ = current
        answer_text = "\n".join(answer or []).strip()
        if not answer_text:
            raise MarkdownError(line, f"the question {' '.join(question).strip()[:60]!r} has no answer "
                                      f"(the next question or section starts at line {at})")
        pairs.append(Pair(" ".join(s.strip() for s in question).strip(), answer_text, line))
        current = None

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        if not fenced and (match := heading.match(line)):
            level, title = len(match.group(1)), match.group(2)
            if current is not None and (current[3] is None or level <= current[3]):
                close(number)
            if found := heading_question.match(title):
                current = [[found.group(1)], [], number, level]
                continue
        elif not fenced and (found := bold_question.match(line.strip())):
            close(number)
            current = [[found.group(1) if found.group(1) is not None else found.group(2)], None, number, None]
            continue
        elif not fenced and (found := bold_answer.match(line.strip())):
            if current is None:
                raise MarkdownError(number, f"an answer marker **{answer_prefix}** without a question before it")
            if "".join(current[1] or []).strip():
                raise MarkdownError(number, f"a second answer marker for the question at line {current[2]}")
            current[1] = [found.group(1)]
            continue
        if current is None:
            continue  # text outside the pairs: a title, an introduction
        if current[1] is None:  # a bold question running over several lines
            current[0].append(line)
        else:
            current[1].append(line)
    if fenced:
        raise MarkdownError(len(text.splitlines()), "a code fence is never closed")
    close(len(text.splitlines()) + 1)
    return pairs
