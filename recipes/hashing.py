"""Content hashes: of JSON-able values, and of files (each unchanged file hashed once)."""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

_CHUNK = 1 << 20


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


# files at least this big keep their digest across processes (a re-run of a plan over a 10 GB corpus
# or beside a 15 GB merged model must not read them all again to learn nothing changed)
REMEMBER_BYTES = 8 << 20


def file_sha256(path: Path) -> str:
    """A file's sha256, computed once for an unchanged file: per process, and for big files also
    across processes (``$RECIPES_CACHE/digests``, keyed by path, size, modification time, inode and
    inode change time; the change time moves on any write or ``utime``, so an edit that keeps the size
    and restores the modification time is read again). The fingerprint, the token store's key and
    the published checksums all ask for it."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


@lru_cache(maxsize=4096)
def _sha256(path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> str:
    memo = _memo(path, size, mtime_ns, ctime_ns, inode) if size >= REMEMBER_BYTES else None
    if memo is not None:
        try:
            known = memo.read_text().strip()
            if len(known) == 64:
                return known
        except OSError:
            pass
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            h.update(block)
    if memo is not None:
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            temporary = memo.with_name(f".{memo.name}.{os.getpid()}")
            temporary.write_text(h.hexdigest())
            os.replace(temporary, memo)
        except OSError:  # a read-only cache: the digest is simply computed again next time
            pass
    return h.hexdigest()


def _memo(path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> Path:
    from recipes.cache import cache_root

    key = hashlib.sha256(json.dumps([path, size, mtime_ns, ctime_ns, inode]).encode()).hexdigest()
    return cache_root() / "digests" / key[:2] / key
