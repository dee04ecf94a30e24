"""Find the line and column of a dotted field path in TOML text, so that errors can say where.

``tomllib`` gives values but no positions; this scanner reads the text once and records the line of
every table header and every ``key =``, with array-of-tables (``[[stages]]``) counted by index.
It covers what recipes use: tables, arrays of tables, dotted and quoted keys. A path it cannot place
falls back to its nearest located parent.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def _split_key(text: str) -> list[str]:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", text)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def locate(text: str) -> dict[tuple, tuple[int, int]]:
    """Map each path (a tuple of keys and array indices) to its 1-based (line, column)."""
    lines: dict[tuple, tuple[int, int]] = {}
    counts: dict[tuple, int] = {}
    table: tuple = ()
    in_multiline: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if in_multiline:
            if raw.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        header = _HEADER.match(raw)
        if header and not _KEY.match(raw):
            keys = _split_key(header.group(2))
            path: tuple = ()
            # resolve earlier array-of-tables segments to their current index
            for key in keys[:-1]:
                path = path + (key,)
                if path in counts:
                    path = path + (counts[path] - 1,)
            path = path + (keys[-1],)
            where = (number, header.start(1) + 1)
            if header.group(1) == "[[":
                index = counts.get(path, 0)
                counts[path] = index + 1
                lines.setdefault(path, where)
                path = path + (index,)
            lines[path] = where
            table = path
            continue
        key = _KEY.match(raw)
        if key:
            path = table + tuple(_split_key(key.group(1)))
            lines.setdefault(path, (number, key.start(1) + 1))
            rest = raw[key.end():]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_multiline = quote
    return lines


def position_of(lines: dict[tuple, tuple[int, int]], path: tuple) -> tuple[int | None, int | None]:
    """The (line, column) of ``path`` or of its nearest located parent; (None, None) if none."""
    path = tuple(path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None, None
