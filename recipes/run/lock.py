"""One `recipes run` per run folder at a time: ``RUN/.lock`` names the process that holds it (pid,
host, since when). A second run stops with one line naming it; a lock left by a process that no
longer exists (killed, crashed machine on this host) is taken over."""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from recipes.errors import RecipeError

LOCK_NAME = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def acquire(run_dir: Path) -> Path:
    """Take the run folder's lock, or raise RecipeError naming who holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    for _ in range(3):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is None:  # being written this instant, or garbage: look again
                time.sleep(0.05)
                holder = _holder(path)
            if holder is not None and (holder.get("host") != me["host"] or _alive(int(holder.get("pid", 0)))):
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
                raise RecipeError(f"{run_dir}: in use by another `recipes run` (pid {holder.get('pid')} on "
                                  f"{holder.get('host')}, since {since}); wait for it to finish, or give another "
                                  f"run folder (-o). If that process is gone, remove {path}")
            path.unlink(missing_ok=True)  # its process is gone: take it over
            continue
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(me, handle)
        return path
    raise RecipeError(f"{path}: could not take the run folder's lock; remove it if no run is using the folder")


def release(path: Path) -> None:
    holder = _holder(path)
    if holder is not None and holder.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


@contextmanager
def run_folder_lock(run_dir: Path, take: bool = True):
    """Hold the lock for the block (``take`` False: the other ranks of a multi-process run)."""
    path = acquire(run_dir) if take else None
    try:
        yield path
    finally:
        if path is not None:
            release(path)
