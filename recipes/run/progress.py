"""A stage's progress as the run keeps it: each complete checkpoint, the first evaluation and a
failure, in the manifest (``recipes.training.stage.StageProgress``).

Time across processes: a stage interrupted and resumed trains in several processes. Each complete
checkpoint records the training and wall seconds spent so far (``elapsed``: the earlier processes'
figures at the checkpoint resumed from, plus this process's), so that the stage's result counts
every process's time for the tokens it counts from the first step, not only the last process's.
"""

from __future__ import annotations

import time
from pathlib import Path

from recipes.run.manifest import Manifest


class ManifestProgress:
    def __init__(self, manifest: Manifest, stage_name: str, run_dir: Path, resuming: bool = False):
        self.manifest, self.name, self.run_dir = manifest, stage_name, run_dir
        earlier = self._entry().get("elapsed") if resuming else None
        self.earlier = {"train": 0.0, "wall": 0.0, **(earlier or {})}
        self.started = self.training_since = time.monotonic()

    def training_started(self) -> None:
        self.training_since = time.monotonic()

    def elapsed(self) -> dict:
        """Training and wall seconds of the stage so far, every process's."""
        now = time.monotonic()
        return {"train": round(self.earlier["train"] + now - self.training_since, 2),
                "wall": round(self.earlier["wall"] + now - self.started, 2)}

    def cumulative(self, train_seconds: float, wall_seconds: float) -> tuple[float, float]:
        """This process's training and wall seconds plus the earlier processes'."""
        return round(self.earlier["train"] + train_seconds, 2), round(self.earlier["wall"] + wall_seconds, 2)

    def _entry(self) -> dict:
        return self.manifest.stage(self.name) or {}

    def checkpoint_saved(self, folder: Path, step: int) -> None:
        self.manifest.update(self.name, status="running", checkpoint=str(folder.relative_to(self.run_dir)), step=step,
                             elapsed=self.elapsed())

    def last_checkpoint(self) -> Path | None:
        recorded = self._entry().get("checkpoint")
        return self.run_dir / recorded if recorded else None

    def eval_before(self) -> dict | None:
        return self._entry().get("eval_before")

    def evaluated_before(self, results: dict) -> None:
        self.manifest.update(self.name, eval_before=results)

    def failed(self, error: str) -> None:
        self.manifest.update(self.name, status="failed", error=error)

    def trained(self) -> str | None:
        """Training finished (its final checkpoint saved): publishing comes next. The final checkpoint."""
        final = self._entry().get("checkpoint")
        self.manifest.update(self.name, status="trained", checkpoint=final)
        return final
