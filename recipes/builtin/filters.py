"""The built-in document filters: length, the share of the expected script, repeated lines and repeated
n-grams. A source runs those its ``filters`` table names (none by default: each can drop real data,
e.g. a short but valid answer, a table of figures, a list of regulations that repeat a clause), with
the options given or the lenient defaults below. Each check gets the source's normalised text.

The rules follow Gopher's repetition filters (Rae et al. 2021) and the Chinese web pipelines' share
of Chinese characters (ChineseWebText, arXiv 2311.01149), with characters for words where the text is
CJK (no word segmenter needed).
"""

from __future__ import annotations

import re
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from recipes.plugins.hookspecs import DocumentFilter, hookimpl

# kana, Han (extensions and compatibility too), Hangul syllables
CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f]+")
LATIN = re.compile("[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f]+")  # letters: not × or ÷
LETTERS = re.compile(r"[^\W\d_]+")  # what str.isalpha() calls a letter
MOSTLY_CJK = 0.3  # a document whose letters are at least this share CJK is read as CJK


def _count(pattern: re.Pattern, text: str) -> int:
    """How many characters of ``text`` ``pattern`` matches (counted by what removing them takes away:
    one pass in C, not a Python loop over the characters)."""
    return len(text) - len(pattern.sub("", text))


_NOT_ASCII_LETTERS = bytes(c for c in range(128) if not chr(c).isalpha())
_ASCII_RUNS = re.compile("[\x00-\x7f]+")


def share(script: re.Pattern, text: str) -> float:
    """The share of a text's letters that ``script`` matches (0 when it has no letter)."""
    # ASCII letters (Latin) are counted on bytes, in C; the rest (few in an English text) by pattern
    ascii_letters = len(text.encode("ascii", "ignore").translate(None, _NOT_ASCII_LETTERS))
    rest = _ASCII_RUNS.sub("", text) if not text.isascii() else ""
    letters = ascii_letters + (_count(LETTERS, rest) if rest else 0)
    found = (ascii_letters if script is LATIN else 0) + (_count(script, rest) if rest else 0)
    return found / letters if letters else 0.0


def cjk_share(text: str) -> float:
    """The share of a text's letters that are CJK (0 when it has no letter)."""
    return share(CJK, text)


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LengthOptions(_Options):
    min_chars: int = Field(50, ge=0, description="Documents shorter than this many characters go.")
    max_chars: Optional[int] = Field(None, gt=0, description="Documents longer than this go (default: no limit).")


class ScriptOptions(_Options):
    min_share: float = Field(0.3, ge=0, le=1, description="The least share of a document's letters in the "
                             "source's script (CJK for script = \"cjk\", Latin for \"latin\").")


class RepeatedLinesOptions(_Options):
    max_share: float = Field(0.3, gt=0, le=1, description="The most share of a document's non-empty lines that "
                             "repeat an earlier line of it (Gopher: 0.3).")
    min_lines: int = Field(3, ge=2, description="Documents with fewer non-empty lines are kept.")


class RepeatedNgramsOptions(_Options):
    max_share: float = Field(0.3, gt=0, le=1, description="The most share of a document's n-grams that repeat "
                             "an earlier n-gram of it.")
    words: int = Field(5, ge=1, description="n for word n-grams (text that is not CJK).")
    chars: int = Field(10, ge=1, description="n for character n-grams (CJK text, where words are not spaced).")


def _length(options: LengthOptions, context):
    def check(text: str, place: str) -> Optional[str]:
        if len(text) < options.min_chars:
            return f"{len(text)} characters < min_chars {options.min_chars}"
        if options.max_chars is not None and len(text) > options.max_chars:
            return f"{len(text)} characters > max_chars {options.max_chars}"
        return None
    return check


def _script(options: ScriptOptions, context):
    wanted = context.script or ("cjk" if context.cjk else "latin")
    script = CJK if wanted == "cjk" else LATIN

    def check(text: str, place: str) -> Optional[str]:
        found = share(script, text)
        if found < options.min_share:
            return f"{wanted} share {found:.2f} < {options.min_share:.2f}"
        return None
    return check


def _repeated_lines(options: RepeatedLinesOptions, context):
    def check(text: str, place: str) -> Optional[str]:
        lines = [line for line in text.split("\n") if line.strip()]
        if len(lines) < options.min_lines:
            return None
        share = 1 - len(set(lines)) / len(lines)
        if share > options.max_share:
            return f"repeated lines {share:.2f} > {options.max_share:.2f}"
        return None
    return check


def _repeated_ngrams(options: RepeatedNgramsOptions, context):
    def check(text: str, place: str) -> Optional[str]:
        cjk = context.cjk if context.cjk is not None else cjk_share(text) >= MOSTLY_CJK
        units = list(text.replace(" ", "").replace("\n", "")) if cjk else text.split()
        n = options.chars if cjk else options.words
        count = len(units) - n + 1
        if count < 2:
            return None
        grams = set(zip(*(units[i:] for i in range(n))))  # each n-gram as a tuple: no strings built
        share = 1 - len(grams) / count
        if share > options.max_share:
            return f"repeated {'character' if cjk else 'word'} {n}-grams {share:.2f} > {options.max_share:.2f}"
        return None
    return check


@hookimpl
def register_filters():
    return [
        DocumentFilter("length", _length, LengthOptions, description="documents shorter than min_chars (default "
                       "50) or longer than max_chars go"),
        DocumentFilter("script", _script, ScriptOptions, description="documents with less than min_share (0.3) of "
                       "their letters in the source's script go (set script on the source)"),
        DocumentFilter("repeated_lines", _repeated_lines, RepeatedLinesOptions, description="documents whose "
                       "lines repeat (more than max_share, 0.3, of them) go"),
        DocumentFilter("repeated_ngrams", _repeated_ngrams, RepeatedNgramsOptions, description="documents whose "
                       "n-grams repeat (more than max_share, 0.3; words, or characters for CJK) go"),
    ]
