"""Publishing a stage's outputs: written aside, checked, then moved into place in one rename, so a
published folder is always complete; a failure (a crash, a full disk) leaves nothing half-written
where a user or the next stage would look."""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from recipes.errors import TrainingError
from recipes.hashing import file_sha256
from recipes.run.manifest import fsync_dir


@contextmanager
def publishing(*folders: Path, keep_note: str = ""):
    """Yield a side folder for each of ``folders``; once the block has written them all, move each
    into place. On any failure every side folder is removed and nothing is published."""
    sides = [folder.with_name(f".{folder.name}.partial") for folder in folders]
    for folder, side in zip(folders, sides):
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(side, ignore_errors=True)
        shutil.rmtree(folder.with_name(f".{folder.name}.old"), ignore_errors=True)
    try:
        yield sides
        for side in sides:
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


def checksums(folder: Path) -> dict:
    """Every file of a published folder: size and sha256."""
    return {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": file_sha256(p)}
            for p in sorted(folder.rglob("*")) if p.is_file()}


def matches(folder: Path, files: dict, full: bool = False) -> bool:
    """Whether a published folder still holds exactly the recorded files (by size; by checksum too
    with ``full``)."""
    if not folder.is_dir():
        return False
    present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    if present != set(files):
        return False
    for name, record in files.items():
        path = folder / name
        if path.stat().st_size != record["size"] or (full and file_sha256(path) != record["sha256"]):
            return False
    return True
