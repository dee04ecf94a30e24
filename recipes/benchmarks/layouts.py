"""A benchmark's files read as the benchmark ships them, into subjects of questions. No torch.

- C-Eval: ``{dev,val,test}/{subject}_{split}.csv`` with a header ``id,question,A,B,C,D,answer[,explanation]``
  (its test split has no answers);
- CMMLU: ``{dev,test}/{subject}.csv`` with a header ``,Question,A,B,C,D,Answer``;
- MMLU: ``data/{dev,val,test}/{subject}_{split}.csv`` without a header (question, A, B, C, D, answer);
- records: a jsonl/json/parquet file, or a folder of ``dev*`` and ``{split}*`` files, each record with
  ``question``, ``choices`` (a list) and ``answer`` (an index from 0 or a letter), optionally ``subject``
  and ``id`` (``cais/mmlu``'s parquet files are such records).

Every mistake is a ``RecipeError`` whose problems name the file and line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from recipes.errors import Problem, RecipeError

LETTERS = "ABCDEFGHIJ"
DEFAULT_SPLIT = {"ceval": "val", "cmmlu": "test", "mmlu": "test", "records": "test"}
RECORD_SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class Item:
    subject: str
    key: str  # "subject/id": names the item in the stored subset and the paired comparisons
    question: str
    choices: tuple[str, ...]
    answer: int | None  # index into choices; None where the split ships no answer
    where: str  # file:line (or file[index])


@dataclass
class Subject:
    name: str
    dev: list[Item] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)


@dataclass
class BenchmarkFiles:
    layout: str
    split: str
    root: Path
    subjects: dict[str, Subject]  # sorted by name


def detect_layout(path: Path) -> str:
    """The layout of a benchmark folder or file (``layout = "auto"``)."""
    if path.is_file():
        return "records"
    if (path / "data" / "dev").is_dir():
        return "mmlu"
    dev = path / "dev"
    if dev.is_dir():
        files = sorted(dev.glob("*.csv"))
        if files and all(f.stem.endswith("_dev") for f in files):
            first = _first_line(files[0]).lower().replace(" ", "")
            return "ceval" if first.startswith("id,question,") else "mmlu"
        if files:
            return "cmmlu"
    if any(p.suffix in RECORD_SUFFIXES for p in path.iterdir()):
        return "records"
    raise RecipeError(Problem("cannot tell the benchmark's layout (no dev/ or data/dev/ folder of CSV files, no "
                              "jsonl/json/parquet file); set layout = \"ceval\", \"cmmlu\", \"mmlu\" or \"records\"",
                              file=str(path)))


def read_benchmark(path: Path, layout: str = "auto", split: str | None = None) -> BenchmarkFiles:
    """Every subject's dev items and items of ``split`` (default: the layout's, see ``DEFAULT_SPLIT``)."""
    if not path.exists():
        raise RecipeError(Problem("no such file or folder; give the benchmark's folder as it ships "
                                  "(or a records file)", file=str(path)))
    if layout == "auto":
        layout = detect_layout(path)
    split = split or DEFAULT_SPLIT[layout]
    if layout == "records":
        return BenchmarkFiles(layout, split, path, _records(path, split))
    if layout != "records" and not path.is_dir():
        raise RecipeError(Problem(f"the {layout} layout is a folder; give the benchmark's folder", file=str(path)))
    root = path / "data" if layout == "mmlu" and (path / "data").is_dir() else path
    subjects: dict[str, Subject] = {}
    for which in ("dev", split):
        folder = root / which
        files = sorted(folder.glob("*.csv")) if folder.is_dir() else []
        if not files:
            if which == split:
                raise RecipeError(Problem(f"no {which}/ folder of CSV files: the {layout} layout keeps split "
                                          f"{which!r} there; check path and split", file=str(root)))
            continue  # no dev split at all: a subject asking for shots is refused by the checks
        for file in files:
            name = file.stem
            if layout != "cmmlu":
                if not name.endswith(f"_{which}"):
                    continue  # not one of this split's files
                name = name[:-len(which) - 1]
            items = list(_csv_items(file, layout, name))
            subject = subjects.setdefault(name, Subject(name))
            if which == "dev" and which != split:
                subject.dev = items
            else:
                subject.items = items
    subjects = {name: s for name, s in sorted(subjects.items()) if s.items}
    if not subjects:
        raise RecipeError(Problem(f"no questions in split {split!r}", file=str(root / split)))
    return BenchmarkFiles(layout, split, path, subjects)


def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        return handle.readline()


def _csv_rows(path: Path):
    """(line the row starts on, cells) for each row of a CSV file."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            start = 1
            for row in reader:
                if any(cell.strip() for cell in row):
                    yield start, row
                start = reader.line_num + 1
    except (csv.Error, UnicodeDecodeError) as exc:
        raise RecipeError(Problem(f"not a readable UTF-8 CSV file: {exc}", file=str(path))) from None


HEADERS = {  # layout -> the columns of its header (lower case), question and answer column names
    "ceval": (("id", "question", "a", "b", "c", "d"), "question", "answer"),
    "cmmlu": (("", "question", "a", "b", "c", "d"), "question", "answer"),
}


def _csv_items(path: Path, layout: str, subject: str):
    rows = _csv_rows(path)
    if layout == "mmlu":  # no header: question, A, B, C, D, answer
        columns = {"question": 0, "a": 1, "b": 2, "c": 3, "d": 4, "answer": 5}
        width, has_answer = 6, True
    else:
        first = next(rows, None)
        if first is None:
            return
        header = [cell.strip().lower() for cell in first[1]]
        expected, _, _ = HEADERS[layout]
        if tuple(header[:len(expected)]) != expected:
            raise RecipeError(Problem(f"the header is {','.join(first[1])!r}, but a {layout} file starts with "
                                      f"{','.join(expected)}; is this the {layout} layout?", file=str(path), line=1))
        columns = {name: index for index, name in enumerate(header)}
        width, has_answer = len(header), "answer" in columns
    seen_answer = False
    items = []
    for line, row in rows:
        where = f"{path}:{line}"
        if len(row) != width:
            raise RecipeError(Problem(f"{len(row)} cells, expected {width}", file=str(path), line=line))
        answer = row[columns["answer"]].strip().upper() if has_answer else ""
        row_id = row[columns["id"]].strip() if "id" in columns else row[0].strip() if layout == "cmmlu" else ""
        items.append((line, where, row, answer, row_id))
        seen_answer = seen_answer or bool(answer)
    for index, (line, where, row, answer, row_id) in enumerate(items):
        if seen_answer and answer not in LETTERS[:4]:
            raise RecipeError(Problem(f"the answer is {answer!r}; expected one of A, B, C, D", file=str(path),
                                      line=line))
        question = row[columns["question"]].strip()
        if not question:
            raise RecipeError(Problem("the question is empty", file=str(path), line=line))
        yield Item(subject, f"{subject}/{row_id or index}", question,
                   tuple(row[columns[c]].strip() for c in "abcd"), LETTERS.index(answer) if answer else None, where)


def _records(path: Path, split: str) -> dict[str, Subject]:
    """Records of a file (the split's items), or of a folder's ``dev*`` and ``{split}*`` files."""
    if path.is_file():
        parts = {split: [path]}
    else:
        found = sorted(p for p in path.iterdir() if p.suffix in RECORD_SUFFIXES)
        parts = {which: [p for p in found if p.name.startswith(which)] for which in ("dev", split)}
        if not parts[split]:
            raise RecipeError(Problem(f"no {split}* file (jsonl, json or parquet) for split {split!r}", file=str(path)))
    from recipes.data.records import read_table

    subjects: dict[str, Subject] = {}
    for which, files in parts.items():
        records = ((where, record) for file in files for where, record in read_table(file))
        for index, (where, record) in enumerate(records):  # counted across the split's files: unique keys
            item = _record_item(record, where, index)
            subject = subjects.setdefault(item.subject, Subject(item.subject))
            (subject.dev if which == "dev" and which != split else subject.items).append(item)
    return {name: s for name, s in sorted(subjects.items()) if s.items}


def _record_item(record: dict, where: str, index: int) -> Item:
    def bad(message: str) -> RecipeError:
        file, _, line = where.rpartition(":")
        if line.isdigit():
            return RecipeError(Problem(message, file=file, line=int(line)))
        return RecipeError(Problem(message, file=where))

    question, choices, answer = record.get("question"), record.get("choices"), record.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise bad("needs a non-empty \"question\" string")
    if (not isinstance(choices, list) or not 2 <= len(choices) <= len(LETTERS)
            or not all(isinstance(c, str) for c in choices)):
        raise bad(f"needs \"choices\": a list of 2 to {len(LETTERS)} strings")
    letters = LETTERS[:len(choices)]
    if isinstance(answer, bool) or answer is None:
        index_ = None
    elif isinstance(answer, int):
        index_ = answer if 0 <= answer < len(choices) else -1
    elif isinstance(answer, str) and answer.strip().upper() in letters and answer.strip():
        index_ = letters.index(answer.strip().upper())
    else:
        index_ = -1
    if index_ is None or index_ < 0:
        raise bad(f"\"answer\" is {answer!r}; give an index from 0 to {len(choices) - 1} or a letter "
                  f"{letters[0]}-{letters[-1]}")
    subject = str(record.get("subject") or "all")
    key = record.get("id")
    return Item(subject, f"{subject}/{key if key is not None else index}", question.strip(),
                tuple(c.strip() for c in choices), index_, where)
