"""Publishing a stage's outputs: written aside, checked, then moved into place in one rename, so a
published folder is always complete; a failure (a crash, a full disk) leaves nothing half-written
where a user or the next stage would look."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from recipes.errors import TrainingError
from recipes.fingerprint import file_sha256
from recipes.manifest import fsync_dir


def publish(folder: Path, write, keep_note: str = "") -> None:
    """Call ``write(side_folder)``, then replace ``folder`` with it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = folder.with_name(f".{folder.name}.partial")
    old = folder.with_name(f".{folder.name}.old")
    for leftover in (work, old):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        write(work)
        _fsync_tree(work)
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            raise TrainingError(f"out of disk space while writing {folder.name} in {folder.parent}: nothing "
                                f"was published{keep_note}; free space and run the same command again") from None
        raise
    if folder.exists():
        os.rename(folder, old)
    os.rename(work, folder)
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
