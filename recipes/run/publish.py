"""Publishing a stage's outputs: written aside, checked, then moved into place in one rename, so a
published folder is always complete; a failure (a crash, a full disk) leaves nothing half-written
where a user or the next stage would look."""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from recipes.errors import RecipeError, TrainingError
from recipes.hashing import file_sha256
from recipes.run.manifest import fsync_dir

# Inside every folder publishing writes (and so inside what it renames to .NAME.old): what it may delete
MARKER = ".written-by-recipes"
# Published files are checked by content (sha256) up to this many bytes in all; beyond, by size and
# modification time, and by content where the time differs.
FULL_CHECK_BYTES = 512 << 20


def _remove_own(folder: Path) -> None:
    """Delete a leftover side folder, only if publishing wrote it."""
    if not folder.exists():
        return
    if not (folder / MARKER).is_file():
        raise RecipeError(f"{folder}: in the way of publishing, and not written by recipes (no {MARKER}); "
                          "move it away and run the same command again")
    shutil.rmtree(folder, ignore_errors=True)


def readable_files(folder: Path) -> None:
    """Every file 0644 less the umask, like the rest of the run (safetensors writes 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, 0o666 & ~mask)


@contextmanager
def publishing(*folders: Path, keep_note: str = ""):
    """Yield a side folder for each of ``folders``; once the block has written them all, move each
    into place. On any failure every side folder is removed and nothing is published."""
    sides = [folder.with_name(f".{folder.name}.partial") for folder in folders]
    for folder, side in zip(folders, sides):
        folder.parent.mkdir(parents=True, exist_ok=True)
        _remove_own(side)
        _remove_own(folder.with_name(f".{folder.name}.old"))
    try:
        for side in sides:
            side.mkdir()
            (side / MARKER).write_text("written by recipes; `recipes export --force` may replace this folder\n",
                                       encoding="utf-8")
        yield sides
        for side in sides:
            readable_files(side)
            _fsync_tree(side)
    except BaseException as exc:
        for side in sides:
            shutil.rmtree(side, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            names = " and ".join(f.name for f in folders)
            raise TrainingError(f"out of disk space while writing the {names} in {folders[0].parent}: nothing "
                                f"was published{keep_note}; free space and run the same command again") from None
        raise
    for folder, side in zip(folders, sides):
        _replace(folder, side)


def _replace(folder: Path, side: Path) -> None:
    old = folder.with_name(f".{folder.name}.old")
    if folder.exists():
        os.rename(folder, old)
    os.rename(side, folder)
    fsync_dir(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(folder)


def _files(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MARKER]


def _read_sha256(path: Path) -> str:
    """Read now (not the per-process cache keyed on size and mtime, which an edit can keep)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checksums(folder: Path) -> dict:
    """Every file of a published folder: size, modification time and sha256."""
    out = {}
    for p in _files(folder):
        stat = p.stat()
        out[str(p.relative_to(folder))] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                                           "ctime_ns": stat.st_ctime_ns, "sha256": file_sha256(p)}
    return out


def matches(folder: Path, files: dict, full: bool | None = None) -> bool:
    """Whether a published folder still holds exactly the recorded files: by size, then by content
    (sha256) unless the file's size, modification time and inode change time are all still the
    recorded ones. The change time cannot be set back (any write, ``touch`` or ``utime`` moves it),
    so an edit that keeps the size and restores the modification time is still read; an untouched
    7B model is not read again on every re-run. Without a recorded change time (older runs): by
    content where that is cheap (``full`` None: up to FULL_CHECK_BYTES in all) or where the
    modification time differs."""
    if not folder.is_dir():
        return False
    present = {str(p.relative_to(folder)) for p in _files(folder)}
    if present != set(files):
        return False
    if full is None:
        full = sum(record["size"] for record in files.values()) <= FULL_CHECK_BYTES
    for name, record in files.items():
        path = folder / name
        stat = path.stat()
        if stat.st_size != record["size"]:
            return False
        untouched = stat.st_mtime_ns == record.get("mtime_ns") and (
            stat.st_ctime_ns == record["ctime_ns"] if "ctime_ns" in record else not full)
        if not untouched and _read_sha256(path) != record["sha256"]:
            return False
    return True
