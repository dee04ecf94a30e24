"""A corpus with planted copies, for the dedup and decontamination tests and benches (not a test module:
``sys.path.insert(0, "tests")`` then ``from planted_corpus import plant``).

Chinese and English documents, made of random sentences (Chinese: characters drawn from 2,500 common
ideographs; English: pseudo-words made of syllables), so that two distinct documents share no 5-gram
by chance. After the distinct documents come, interleaved:

- exact copies of earlier documents;
- near copies: an earlier document with a share of its characters changed (``near_edit``, 2 to 5% by
  default, drawn per copy). Chinese: single characters replaced by other ideographs. English: whole
  words replaced by other words until that share of the characters has changed (how texts are
  edited; ``english_edits = "letters"`` replaces single letters instead, which word 5-grams do not see
  past: one changed letter in every 20 changes most words' 5-grams);
- one training document with a paragraph copied from the evaluation set (``eval.jsonl``).

Each file is JSON lines ``{"text": ...}``; the places (``file:line``) of every kind are returned.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

IDEOGRAPHS = [chr(c) for c in range(0x4E00, 0x4E00 + 2500)]
SYLLABLES = [c + v for c in "bcdfghklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]


@dataclass
class Planted:
    files: list[Path]  # the training files, in order
    eval_file: Path
    distinct: list[str] = field(default_factory=list)  # places of the documents every filter must keep
    exact: list[str] = field(default_factory=list)
    near: list[str] = field(default_factory=list)
    contaminated: list[str] = field(default_factory=list)
    edits: dict = field(default_factory=dict)  # near copy's place -> the share of characters changed
    texts: dict = field(default_factory=dict)  # place -> text
    origin: dict = field(default_factory=dict)  # copy's place -> the place of the document it copies


def chinese_document(rng: random.Random, chars: int) -> str:
    sentences, size = [], 0
    while size < chars:
        sentence = "".join(rng.choices(IDEOGRAPHS, k=rng.randint(12, 30))) + rng.choice("。，；！？")
        sentences.append(sentence)
        size += len(sentence)
    return "".join(sentences)


def words(rng: random.Random, count: int) -> list[str]:
    return ["".join(rng.choices(SYLLABLES, k=rng.randint(1, 3))) for _ in range(count)]


def english_document(rng: random.Random, chars: int) -> str:
    sentences, size = [], 0
    while size < chars:
        sentence = " ".join(words(rng, rng.randint(8, 20))).capitalize() + "."
        sentences.append(sentence)
        size += len(sentence) + 1
    return " ".join(sentences)


def near_copy(rng: random.Random, text: str, share: float, english_edits: str = "words") -> str:
    """``text`` with ``share`` of its characters changed (see the module's docstring)."""
    chars = list(text)
    if english_edits == "words" and not "\u4e00" <= text[0] <= "\u9fff":
        tokens = text.split(" ")
        budget, order = share * len(text), rng.sample(range(len(tokens)), len(tokens))
        for index in order:
            if budget <= 0:
                break
            budget -= len(tokens[index])
            tokens[index] = words(rng, 1)[0]
        return " ".join(tokens)
    positions = [i for i, c in enumerate(chars) if c.isalpha()]
    for index in rng.sample(positions, max(1, round(share * len(chars)))):
        old = chars[index]
        while chars[index] == old:
            chars[index] = rng.choice(IDEOGRAPHS) if "\u4e00" <= old <= "\u9fff" else rng.choice("abcdefghijklmnopqrstuvwxyz")
    return "".join(chars)


def plant(folder: Path, distinct: int = 40, exact: int = 10, near: int = 20, chars: int = 400,
          near_edit: tuple[float, float] = (0.02, 0.05), english_edits: str = "words", seed: int = 0) -> Planted:
    """Write ``zh.jsonl`` and ``en.jsonl`` (``distinct`` documents each, then ``exact`` exact and
    ``near`` near copies each, of earlier documents of the same file) and
    ``eval.jsonl`` (evaluation records, one of whose paragraphs a training document carries)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    planted = Planted([folder / "zh.jsonl", folder / "en.jsonl"], folder / "eval.jsonl")
    rows: dict[Path, list[str]] = {path: [] for path in planted.files}

    def add(path: Path, text: str, kind: list[str]) -> str:
        rows[path].append(text)
        place = f"{path}:{len(rows[path])}"
        kind.append(place)
        planted.texts[place] = text
        return place

    make = {planted.files[0]: chinese_document, planted.files[1]: english_document}
    for path, write in make.items():
        for _ in range(distinct):
            add(path, write(rng, chars), planted.distinct)
    # the evaluation set: English and Chinese paragraphs; the last training document carries one of them
    evals = [english_document(rng, 300), chinese_document(rng, 200), english_document(rng, 300)]
    planted.eval_file.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in evals),
                                 encoding="utf-8")
    for path in planted.files:
        originals = [p for p in planted.distinct if p.startswith(f"{path}:")]
        for _ in range(exact):
            source = rng.choice(originals)
            planted.origin[add(path, planted.texts[source], planted.exact)] = source
        for _ in range(near):
            share, source = rng.uniform(*near_edit), rng.choice(originals)
            place = add(path, near_copy(rng, planted.texts[source], share, english_edits), planted.near)
            planted.edits[place], planted.origin[place] = share, source
    add(planted.files[1], english_document(rng, 200) + " " + evals[0][:250] + " " + english_document(rng, 200),
        planted.contaminated)
    for path, texts in rows.items():
        path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return planted
