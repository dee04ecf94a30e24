"""The built-in document filters: length, the share of the expected script, repeated lines and repeated
n-grams. A source runs those its ``filters`` table names (none by default: each can drop real data,
e.g. a short but valid answer, a table of figures, a list of regulations that repeat a clause), with
the options given or the lenient defaults below. Each check gets the source's normalised text.

The rules follow Gopher's repetition filters (Rae et al. 2021) and the Chinese web pipelines' share
of Chinese characters (ChineseWebText, arXiv 2311.01149), with characters for words where the text is
CJK (no word segmenter needed).
"""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from recipes.plugins.hookspecs import DocumentFilter, hookimpl

CJK_RANGES = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7AF), (0xF900, 0xFAFF),
              (0x20000, 0x2FA1F))  # kana, Han (extensions and compatibility too), Hangul syllables
MOSTLY_CJK = 0.3  # a document whose letters are at least this share CJK is read as CJK


def is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in CJK_RANGES)


def is_latin(char: str) -> bool:
    return char.isascii() or 0x00C0 <= ord(char) <= 0x024F


def cjk_share(text: str) -> float:
    """The share of a text's letters that are CJK (0 when it has no letter)."""
    letters = [c for c in text if c.isalpha()]
    return sum(map(is_cjk, letters)) / len(letters) if letters else 0.0


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
    belongs = is_cjk if wanted == "cjk" else is_latin

    def check(text: str, place: str) -> Optional[str]:
        letters = [c for c in text if c.isalpha()]
        share = sum(map(belongs, letters)) / len(letters) if letters else 0.0
        if share < options.min_share:
            return f"{wanted} share {share:.2f} < {options.min_share:.2f}"
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
        units = [c for c in text if not c.isspace()] if cjk else text.split()
        n = options.chars if cjk else options.words
        count = len(units) - n + 1
        if count < 2:
            return None
        grams = ["".join(units[i:i + n]) if cjk else " ".join(units[i:i + n]) for i in range(count)]
        share = 1 - len(set(grams)) / count
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
