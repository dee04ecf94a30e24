"""Opening data files as streams: compressed or not, a UTF-8 byte-order mark and CRLF accepted.

Nothing here reads a whole file: a file is opened as a text (or byte) stream through the
decompressor its last suffix names (``.gz``, ``.bz2``, ``.xz``, ``.zst``), and the format is read
from the suffix before it (``corpus.jsonl.gz`` is JSON lines). ``ByteCounter`` tells how far into
the file on disk a reader is, for a progress bar's ETA.
"""

from __future__ import annotations

import io
from pathlib import Path

from recipes.errors import Problem, RecipeError

COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
BUFFER = 1 << 20  # bytes read from disk at a time


def data_suffix(path: Path) -> str:
    """The suffix that names the format, behind a compression suffix: ``a.jsonl.gz`` -> ``.jsonl``."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


class ByteCounter(io.RawIOBase):
    """A raw file that counts the bytes read from disk (shared by every reader of a run)."""

    total = 0  # bytes read by every ByteCounter in this process

    def __init__(self, path: Path):
        self._file = open(path, "rb", buffering=0)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self._file.readinto(buffer)
        ByteCounter.total += count or 0
        return count

    def close(self) -> None:
        self._file.close()
        super().close()


def open_binary(path: Path):
    """The decompressed bytes of ``path``, as a buffered stream."""
    path = Path(path)
    raw = io.BufferedReader(ByteCounter(path), BUFFER)
    suffix = path.suffix.lower()
    if suffix == ".gz":
        import gzip

        return gzip.GzipFile(fileobj=raw, mode="rb")
    if suffix == ".bz2":
        import bz2

        return bz2.BZ2File(raw)
    if suffix == ".xz":
        import lzma

        return lzma.LZMAFile(raw)
    if suffix == ".zst":
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True), BUFFER)
    return raw


def open_text(path: Path, newline: str | None = None):
    """``path`` as UTF-8 text (a byte-order mark dropped; CRLF read as LF unless ``newline=""``)."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8-sig", newline=newline)


def decode_error(path: Path, exc: Exception) -> RecipeError:
    if isinstance(exc, UnicodeDecodeError):
        return RecipeError(Problem(f"not UTF-8 text (byte {exc.start} of a block): {exc.reason}", file=str(path)))
    return RecipeError(Problem(f"cannot read the file: {exc}", file=str(path)))


def text_lines(path: Path):
    """(line number, line without its end) of a text file, one at a time."""
    try:
        with open_text(path) as handle:
            for number, line in enumerate(handle, start=1):
                yield number, line.rstrip("\n")
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise decode_error(path, exc) from exc
    except Exception as exc:  # zstandard.ZstdError, lzma.LZMAError: a damaged compressed file
        if type(exc).__module__.split(".")[0] in ("zstandard", "_lzma", "lzma", "zlib", "_bz2"):
            raise decode_error(path, exc) from exc
        raise
