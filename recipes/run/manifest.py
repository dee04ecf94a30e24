"""The run's manifest: per stage, its status, fingerprint, inputs, last complete checkpoint and
published outputs with checksums. Written atomically (a temporary file, fsync, rename), so that a
crash at any moment leaves the previous or the next version, never half of one. Only the main
process writes it (``RANK`` 0); under torchrun the other ranks read it.

Statuses: ``running`` (training; ``checkpoint`` names the last complete one), ``trained`` (training
finished, its final checkpoint saved; publishing), ``done`` (outputs published and recorded),
``failed`` (training failed; the last good checkpoint is kept).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from recipes.errors import RecipeError
from recipes.training import distributed

MANIFEST_NAME = "manifest.json"
VERSION = 1


def read_json_object(path: Path) -> dict:
    """A run folder's JSON file (recipe.json, stage.json, samples) as a dict: {} when it is missing,
    unreadable or not an object (a reader of a run folder says what is missing itself)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def inside(run_dir: Path, recorded: str) -> Path:
    """A path the manifest records, which must stay inside the run folder (never ``/``, ``..``)."""
    path = (run_dir / recorded).resolve()
    if not path.is_relative_to(run_dir.resolve()):
        raise RecipeError(f"{run_dir / MANIFEST_NAME}: records {recorded!r}, outside the run folder; the manifest "
                          "was edited by hand: move it away to start the run afresh")
    return path


class Manifest:
    def __init__(self, run_dir: Path, data: dict):
        self.run_dir, self.data = run_dir, data

    @classmethod
    def load(cls, run_dir: Path) -> "Manifest":
        path = run_dir / MANIFEST_NAME
        if not path.exists():
            return cls(run_dir, {"version": VERSION, "stages": {}})
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise RecipeError(f"{path}: unreadable ({exc}); it is only ever replaced whole, so something "
                              "else wrote it: move it away to start the run afresh") from None
        if data.get("version") != VERSION:
            raise RecipeError(f"{path}: manifest version {data.get('version')} is not {VERSION}; "
                              "use another run folder (-o) or move this one away")
        return cls(run_dir, data)

    @property
    def path(self) -> Path:
        return self.run_dir / MANIFEST_NAME

    def stage(self, name: str) -> dict | None:
        return self.data["stages"].get(name)

    def update(self, name: str, **fields) -> dict:
        """Merge fields into a stage's entry and write the manifest."""
        entry = self.data["stages"].setdefault(name, {})
        entry.update(fields, updated=time.time())
        self.save()
        return entry

    def reset(self, name: str, **fields) -> dict:
        """Replace a stage's entry (a fresh start) and write the manifest."""
        self.data["stages"][name] = {}
        return self.update(name, **fields)

    def record_recipe(self, identity: dict) -> None:
        """Which recipe runs in this folder (recipes.run.identity)."""
        if self.data.get("recipe") != identity:
            self.data["recipe"] = identity
            self.save()

    def save(self) -> None:
        if distributed.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, json.dumps(self.data, indent=2, ensure_ascii=False) + "\n")
