"""Content hashes: of JSON-able values, and of files (each unchanged file hashed once per process)."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

_CHUNK = 1 << 20


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """A file's sha256, computed once per process for an unchanged file (the fingerprint, the
    tokenization cache key and the published checksums all ask for it)."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=4096)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()
