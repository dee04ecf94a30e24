"""A stage's progress as the run keeps it: each complete checkpoint, the first evaluation and a
failure, in the manifest (``recipes.training.stage.StageProgress``)."""

from __future__ import annotations

from pathlib import Path

from recipes.run.manifest import Manifest


class ManifestProgress:
    def __init__(self, manifest: Manifest, stage_name: str, run_dir: Path):
        self.manifest, self.name, self.run_dir = manifest, stage_name, run_dir

    def _entry(self) -> dict:
        return self.manifest.stage(self.name) or {}

    def checkpoint_saved(self, folder: Path, step: int) -> None:
        self.manifest.update(self.name, status="running", checkpoint=str(folder.relative_to(self.run_dir)), step=step)

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
