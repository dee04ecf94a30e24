"""The text the cleaning checks compare: Unicode NFKC and whitespace normalisation, and its digest.

NFKC folds compatibility forms (full-width Latin letters and digits, ligatures, non-breaking spaces)
so that two copies differing only in them hash alike. Never ftfy's ``fix_character_width``, and by
default not the trained text either (``normalize = "checks"``): NFKC also turns the full-width
punctuation Chinese is written with (，：？！) into ASCII, which a model should not learn from a
Chinese corpus.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

# only what changes matches (a plain space or line end between words is left alone: most of a text)
_SPACES = re.compile(r"[^\S\n]{2,}|[^\S \n]")  # runs of whitespace other than newlines, or a tab alone
_LINE_EDGES = re.compile(r" \n ?|\n ")
_BLANK_LINES = re.compile(r"\n{3,}")
_ASCII_SPACES = "\t\x0b\x0c\x1c\x1d\x1e\x1f"  # ASCII whitespace other than a space and a line end


def normalize(text: str) -> str:
    """NFKC, line ends as ``\\n``, each run of spaces and tabs one space, no space at a line's ends, at
    most one empty line in a row, no whitespace at the ends."""
    if not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    # each substitution runs only where a fast substring test finds something for it to change
    if not text.isascii() or "  " in text or any(space in text for space in _ASCII_SPACES):
        text = _SPACES.sub(" ", text)
    if " \n" in text or "\n " in text:
        text = _LINE_EDGES.sub("\n", text)
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def digest(text: str) -> int:
    """The 8-byte digest exact dedup compares (BLAKE2b; a collision among a billion documents has a
    chance of about 3e-2, so two distinct documents are in practice never taken for copies)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def conversation_text(record: dict) -> str:
    """An SFT conversation as the checks see it: a ``role: content`` line per message (tool calls as
    their JSON), then the tool definitions, if any."""
    import json

    lines = []
    for message in record["messages"]:
        content = message.get("content") or ""
        calls = message.get("tool_calls")
        if calls:
            content += ("\n" if content else "") + json.dumps(calls, ensure_ascii=False, sort_keys=True)
        lines.append(f"{message['role']}: {content}")
    if record.get("tools"):
        lines.append("tools: " + json.dumps(record["tools"], ensure_ascii=False, sort_keys=True))
    return "\n".join(lines)
