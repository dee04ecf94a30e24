"""Reading table-like data files into records, each with the place it came from.

Every format plugin reads JSON, JSON lines, CSV or Parquet (compressed or not) the same way, so that a bad record is
always named the same way: ``file:line`` for line-based files (.jsonl, .csv) and ``file[index]``
for arrays and tables (.json, .parquet). Field accessors raise a ``RecipeError`` that names the
record and the column, so that a format's own code stays a few lines long. No torch here:
``recipes validate`` imports the formats.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import orjson

from recipes.bad_records import bad_record
from recipes.data.streams import BUFFER, COMPRESSIONS, data_suffix, decode_error, open_text, text_lines
from recipes.errors import Problem, RecipeError

RECORD_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")


def read_table(path: Path) -> Iterator[tuple[str, dict]]:
    """Records of a .json (an array of objects), .jsonl, .csv (a header row) or .parquet file,
    each with where it came from; the first four also compressed (``.jsonl.gz``, ``.json.zst``, ...).
    Streamed: one record at a time, never the whole file in memory. A malformed record goes through
    ``bad_record`` (an error by default; skipped and counted under ``on_bad_record = "skip"``)."""
    path = Path(path)
    suffix = data_suffix(path)
    reader = {".json": read_json_array, ".jsonl": read_json_lines, ".csv": read_csv,
              ".parquet": read_parquet}.get(suffix)
    if reader is None:
        raise RecipeError(Problem(f"cannot read {suffix or 'a file without suffix'} records; "
                                  f"expected one of {', '.join(RECORD_SUFFIXES)} (optionally "
                                  f"{', '.join(COMPRESSIONS)})", file=str(path)))
    return reader(path)


def read_text_file(path: Path) -> str:
    """The whole file as UTF-8 text (decompressed, byte-order mark dropped), or an error naming it."""
    try:
        with open_text(path) as handle:
            return handle.read()
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise decode_error(path, exc) from exc


def parse_json(text: str):
    """``json.loads``, through orjson where it accepts the text (several times faster on a corpus's
    long lines); what orjson refuses (NaN, integers beyond 64 bits, malformed JSON) goes to
    ``json.loads``, so the values accepted and the error messages are the standard library's."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def read_json_lines(path: Path) -> Iterator[tuple[str, dict]]:
    for number, line in text_lines(path):
        if not line.strip():
            continue
        try:
            record = parse_json(line)
        except json.JSONDecodeError as exc:
            bad_record(RecipeError(Problem(f"not valid JSON: {exc.msg} (column {exc.colno})",
                                           file=str(path), line=number)))
            continue
        if not isinstance(record, dict):
            bad_record(RecipeError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}"))
            continue
        yield f"{path}:{number}", record


def read_json_array(path: Path) -> Iterator[tuple[str, dict]]:
    """The objects of a JSON array, decoded one at a time from a buffer refilled from the stream."""
    decoder = json.JSONDecoder()
    try:
        with open_text(path) as handle:
            buffer, position, line, index = "", 0, 1, 0
            state = "start"  # start -> item -> comma -> ... -> end

            def fill() -> bool:
                nonlocal buffer, position
                chunk = handle.read(BUFFER)
                if not chunk:
                    return False
                buffer = buffer[position:] + chunk
                position = 0
                return True

            while True:
                while True:  # skip white space
                    while position < len(buffer) and buffer[position] in " \t\r\n":
                        line += buffer[position] == "\n"
                        position += 1
                    if position < len(buffer) or not fill():
                        break
                at_end = position >= len(buffer)
                char = "" if at_end else buffer[position]
                if state == "start":
                    if char != "[":
                        raise RecipeError(Problem("expected a JSON array of records (or use .jsonl, one record "
                                                  "a line)", file=str(path), line=line))
                    position += 1
                    state = "first"
                elif state in ("first", "comma") and char == "]" or state == "after" and char == "]":
                    return
                elif state == "after":
                    if char != ",":
                        raise RecipeError(Problem(f"not valid JSON: expected ',' or ']' after record {index - 1}",
                                                  file=str(path), line=line))
                    position += 1
                    state = "comma"
                else:
                    if at_end:
                        raise RecipeError(Problem("not valid JSON: the array is not closed", file=str(path),
                                                  line=line))
                    while True:
                        try:
                            record, stop = decoder.raw_decode(buffer, position)
                            if stop == len(buffer) and fill():  # a number may go on in the next chunk
                                continue
                            break
                        except json.JSONDecodeError as exc:
                            if not fill():
                                raise RecipeError(Problem(f"not valid JSON: {exc.msg}", file=str(path),
                                                          line=line + buffer.count("\n", position, exc.pos)))
                    line += buffer.count("\n", position, stop)
                    position = stop
                    where = f"{path}[{index}]"
                    index += 1
                    state = "after"
                    if not isinstance(record, dict):
                        bad_record(RecipeError(f"{where}: expected a JSON object, got {type(record).__name__}"))
                        continue
                    yield where, record
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise decode_error(path, exc) from exc


def read_csv(path: Path) -> Iterator[tuple[str, dict]]:
    """Rows of a CSV file with a header row; a row is named by the line it starts on."""
    with open_text(path, newline="") as handle:
        reader = csv.DictReader(handle)
        start = 2  # the line after the header
        try:
            for row in reader:
                if None in row:  # more cells than header columns: csv puts them under the key None
                    bad_record(RecipeError(Problem(f"{len(row) - 1 + len(row[None])} cells but the header has "
                                                   f"{len(reader.fieldnames)} columns", file=str(path), line=start)))
                else:
                    yield f"{path}:{start}", row
                start = reader.line_num + 1
        except (csv.Error, UnicodeDecodeError) as exc:
            raise RecipeError(Problem(f"not valid CSV: {exc}", file=str(path), line=reader.line_num)) from exc


def read_parquet(path: Path) -> Iterator[tuple[str, dict]]:
    """Rows of a Parquet file, a row group's batch at a time."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow is a dependency
        raise RecipeError(Problem("reading .parquet needs pyarrow: pip install pyarrow", file=str(path))) from exc
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        index = 0
        for batch in batches:
            for record in batch.to_pylist():
                yield f"{path}[{index}]", record
                index += 1
    except RecipeError:
        raise
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise RecipeError(Problem(f"not a readable Parquet file: {exc}", file=str(path))) from exc


def convert_records(path: Path, convert: Callable[[str, dict], dict]) -> Iterator[dict]:
    """``convert(where, record)`` for each record of ``path``; a record it rejects (a ``RecipeError``)
    goes through ``bad_record``, and the next one is read (a format's generator stays alive)."""
    for where, record in read_table(path):
        try:
            converted = convert(where, record)
        except RecipeError as exc:
            bad_record(exc)
            continue
        yield converted


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
