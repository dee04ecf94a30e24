"""Reading table-like data files into records, each with the place it came from.

Every format plugin reads JSON, JSON lines, CSV or Parquet the same way, so that a bad record is
always named the same way: ``file:line`` for line-based files (.jsonl, .csv) and ``file[index]``
for arrays and tables (.json, .parquet). Field accessors raise a ``RecipeError`` that names the
record and the column, so that a format's own code stays a few lines long. No torch here:
``recipes validate`` imports the formats.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator, Optional

from recipes.errors import Problem, RecipeError

RECORD_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")


def read_table(path: Path) -> Iterator[tuple[str, dict]]:
    """Records of a .json (an array of objects), .jsonl, .csv (a header row) or .parquet file,
    each with where it came from."""
    path = Path(path)
    reader = {".json": read_json_array, ".jsonl": read_json_lines, ".csv": read_csv,
              ".parquet": read_parquet}.get(path.suffix.lower())
    if reader is None:
        raise RecipeError(Problem(f"cannot read {path.suffix or 'a file without suffix'} records; "
                                  f"expected one of {', '.join(RECORD_SUFFIXES)}", file=str(path)))
    return reader(path)


def read_text_file(path: Path) -> str:
    """The whole file as UTF-8 text, or an error naming it (a binary file in a data folder)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(Problem(f"not UTF-8 text (byte {exc.start}): {exc.reason}", file=str(path))) from exc


def read_json_lines(path: Path) -> Iterator[tuple[str, dict]]:
    for number, line in enumerate(read_text_file(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RecipeError(Problem(f"not valid JSON: {exc.msg} (column {exc.colno})",
                                      file=str(path), line=number)) from exc
        yield f"{path}:{number}", _object(record, f"{path}:{number}")


def read_json_array(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        data = json.loads(read_text_file(path))
    except json.JSONDecodeError as exc:
        raise RecipeError(Problem(f"not valid JSON: {exc.msg} (column {exc.colno})",
                                  file=str(path), line=exc.lineno)) from exc
    if not isinstance(data, list):
        raise RecipeError(Problem("expected a JSON array of records (or use .jsonl, one record a line)",
                                  file=str(path)))
    for index, record in enumerate(data):
        yield f"{path}[{index}]", _object(record, f"{path}[{index}]")


def read_csv(path: Path) -> Iterator[tuple[str, dict]]:
    """Rows of a CSV file with a header row; a row is named by the line it starts on."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        start = 2  # the line after the header
        try:
            for row in reader:
                if None in row:  # more cells than header columns: csv puts them under the key None
                    raise RecipeError(Problem(f"{len(row) - 1 + len(row[None])} cells but the header has "
                                              f"{len(reader.fieldnames)} columns", file=str(path), line=start))
                yield f"{path}:{start}", row
                start = reader.line_num + 1
        except (csv.Error, UnicodeDecodeError) as exc:
            raise RecipeError(Problem(f"not valid CSV: {exc}", file=str(path), line=reader.line_num)) from exc


def read_parquet(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow is a dependency
        raise RecipeError(Problem("reading .parquet needs pyarrow: pip install pyarrow", file=str(path))) from exc
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise RecipeError(Problem(f"not a readable Parquet file: {exc}", file=str(path))) from exc
    for index, record in enumerate(rows):
        yield f"{path}[{index}]", record


def _object(record, where: str) -> dict:
    if not isinstance(record, dict):
        raise RecipeError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


def missing(record: dict, key: str, where: str, option: str | None = None) -> RecipeError:
    """The error for a record without the column ``key``: names the record, the column and the fix."""
    fix = f"set the format option {option!r} to the column's name" if option else "rename it in the data"
    return RecipeError(f"{where}: missing column {key!r} (columns here: {', '.join(map(str, record)) or 'none'}); "
                       f"{fix}")


def field(record: dict, key: str, where: str, *, required: bool = True, kind: type = str,
          option: str | None = None) -> Optional[Any]:
    """``record[key]``, checked to be a ``kind``; None when absent (or null) and not required.

    ``option`` names the format option that renames this column, for the error message."""
    value = record.get(key)
    if value is None:
        if required:
            raise missing(record, key, where, option)
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise RecipeError(f"{where}: column {key!r} must be {_a(kind)}, got {type(value).__name__}")
    return value


def json_field(record: dict, key: str, where: str, kind: type) -> Optional[Any]:
    """A column that holds a ``kind`` either as such or as a JSON string (LLaMA-Factory stores tools and
    function calls as JSON text); None when absent or empty."""
    value = record.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RecipeError(f"{where}: column {key!r} is not valid JSON: {exc.msg} (column {exc.colno})") from exc
    if not isinstance(value, kind):
        raise RecipeError(f"{where}: column {key!r} must be {_a(kind)} (or JSON text of one), "
                          f"got {type(value).__name__}")
    return value


def _a(kind: type) -> str:
    return {str: "a string", list: "a list", dict: "an object", int: "an integer", bool: "true or false"}.get(
        kind, kind.__name__)
