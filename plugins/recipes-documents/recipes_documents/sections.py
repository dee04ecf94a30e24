"""Cutting a document's Markdown into sections at its headings. Pure text processing (no recipes
import), so it is easy to test on its own.

A section starts at each heading of ``level`` or above (``#`` is level 1); text before the first
such heading is a section of its own. A heading with no text under it before the next cut (a chapter
title right above its first subsection) stays at the top of the next section, so that no record is a
bare title. Lines inside code fences are never headings.
"""

from __future__ import annotations

import re

HEADING = re.compile(r"^(#{1,6})\s+\S")
FENCE = re.compile(r"^\s{0,3}(```|~~~)")


def split_sections(markdown: str, level: int) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    fenced = False
    for line in markdown.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        heading = None if fenced else HEADING.match(line)
        if heading and len(heading.group(1)) <= level and _has_body(current):
            parts.append("\n".join(current).strip())
            current = []
        current.append(line)
    tail = "\n".join(current).strip()
    if tail and parts and not _has_body(current):  # a title at the very end belongs to what came before
        parts[-1] += "\n\n" + tail
    elif tail:
        parts.append(tail)
    return parts


def _has_body(lines: list[str]) -> bool:
    return any(line.strip() and not HEADING.match(line) for line in lines)
