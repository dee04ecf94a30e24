"""A corpus with planted copies, written for these tests (seeded, no download): distinct Chinese and
English documents, exact copies of some (a few with other whitespace or full-width letters, which
normalisation folds), and near copies of others with 2-5% of their characters changed in a few
places (the way a reissued clause or a republished page differs), over several files and two sources.

Controls: documents that share half their text with an earlier one (``half``: not near copies, they
must stay) and a few too short for a ``length`` filter (``short``). Beside them, ``eval.jsonl``, an
evaluation set, one of whose paragraphs an English training document carries (``contaminated``).

``plant`` writes the files and returns the ground truth: per document its place (``file:line``) and
what it is (``distinct``, ``half``, ``short``, ``exact`` or ``near`` copy, with its original's place).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

# common Chinese characters (a pseudo-text drawn from them has the character statistics MinHash sees)
HANZI = ("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后"
         "多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由"
         "其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建"
         "月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较"
         "将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金")
WORDS = ("system data model policy market value report water energy health board member public service region "
         "contract safety quality result method process network station river council budget course program "
         "account history project product design problem question answer section article clause notice review "
         "measure standard figure record period control center office manual device engine signal").split()
ADJECTIVES = ("annual local general national final technical formal minor major common special regional digital "
              "physical social legal medical urban rural internal external").split()
VERBS = ("reports shows requires covers includes explains defines reviews limits describes supports changes "
         "reduces extends follows applies replaces").split()
SENTENCES = 24  # per document


def chinese_document(rng: random.Random) -> str:
    sentences = ["".join(rng.choice(HANZI) for _ in range(rng.randint(12, 30))) + "。" for _ in range(SENTENCES)]
    return "".join(sentences)


def english_document(rng: random.Random) -> str:
    def sentence():
        words = [rng.choice(ADJECTIVES), rng.choice(WORDS), rng.choice(VERBS), "the", rng.choice(ADJECTIVES),
                 rng.choice(WORDS), "of", "the", rng.choice(WORDS)] + [rng.choice(WORDS) for _ in range(rng.randint(2, 8))]
        return " ".join(words).capitalize() + f" in {rng.randint(1900, 2030)}."
    return " ".join(sentence() for _ in range(SENTENCES))


def near_copy(text: str, rng: random.Random, alphabet: str) -> str:
    """``text`` with 2-5% of its characters replaced, in three runs at random places (spaces kept)."""
    chars = list(text)
    changed = max(3, round(len(chars) * rng.uniform(0.02, 0.05)))
    for run in (changed // 3, changed // 3, changed - 2 * (changed // 3)):
        start = rng.randrange(0, len(chars) - run)
        for i in range(start, start + run):
            if not chars[i].isspace():
                chars[i] = rng.choice([c for c in alphabet if c != chars[i]])
    return "".join(chars)


def exact_copy(text: str, rng: random.Random, variant: int) -> str:
    """The same text, or one that normalisation makes the same (NFKC, whitespace)."""
    if variant == 1:
        return text.replace(" ", "  ", 3) + "  "
    if variant == 2 and any(c.isascii() and c.isalpha() for c in text):
        first = next(i for i, c in enumerate(text) if c.isascii() and c.isalpha())
        return text[:first] + chr(ord(text[first]) + 0xFEE0) + text[first + 1:]  # its full-width form
    return text


@dataclass
class Planted:
    kind: str  # "distinct", "exact", "near"
    source: str
    place: str
    original: str | None = None  # the place of the document it copies


def plant(folder: Path, seed: int = 0, distinct: int = 60, exact: int = 16, near: int = 24, half: int = 4,
          short: int = 3) -> list[Planted]:
    """Two sources: ``zh`` (two files of Chinese documents) and ``en`` (two files of English ones, with
    some copies of Chinese documents); copies always come after their original, in recipe order."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"zh": [folder / "zh-1.jsonl", folder / "zh-2.jsonl"], "en": [folder / "en-1.jsonl", folder / "en-2.jsonl"]}
    rows: dict[Path, list[str]] = {path: [] for paths in files.values() for path in paths}
    truth: list[Planted] = []
    originals: list[tuple[str, str, str]] = []  # (text, place, language)

    def put(path: Path, text: str, kind: str, source: str, original: str | None = None) -> str:
        rows[path].append(json.dumps({"text": text}, ensure_ascii=False))
        place = f"{path}:{len(rows[path])}"
        truth.append(Planted(kind, source, place, original))
        return place

    for i in range(distinct):
        for language, source in (("zh", "zh"), ("en", "en")):
            text = chinese_document(rng) if language == "zh" else english_document(rng)
            path = files[source][0 if i < distinct // 2 else 1]
            originals.append((text, put(path, text, "distinct", source), language))
    for j in range(exact):
        text, place, language = rng.choice(originals)
        source = "en" if j % 3 == 0 else language  # some Chinese copies in the later source
        put(files[source][1], exact_copy(text, rng, j % 3), "exact", source, place)
    for j in range(near):
        text, place, language = originals[rng.randrange(len(originals))]
        alphabet = HANZI if language == "zh" else "abcdefghijklmnopqrstuvwxyz"
        put(files[language][1], near_copy(text, rng, alphabet), "near", language, place)
    for _ in range(half):
        text, place, language = originals[rng.randrange(len(originals))]
        other = chinese_document(rng) if language == "zh" else english_document(rng)
        put(files[language][1], text[:len(text) // 2] + other[len(other) // 2:], "half", language, place)
    for j in range(short):
        put(files["zh"][0], f"短文{j}。", "short", "zh")
    evals = [english_document(rng), chinese_document(rng)]
    (folder / "eval.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in evals),
                                       encoding="utf-8")
    put(files["en"][1], english_document(rng)[:600] + " " + evals[0][:300], "contaminated", "en")
    for path, lines in rows.items():
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return truth
