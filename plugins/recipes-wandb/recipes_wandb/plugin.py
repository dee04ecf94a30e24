"""``callbacks = [..., "wandb"]``: one Weights & Biases run per recipes run.

- Where: W&B's own settings decide (``WANDB_PROJECT``, ``WANDB_ENTITY``, ``WANDB_MODE``; ``wandb
  login`` for the cloud). ``WANDB_MODE=offline`` needs no account: the run is written under
  ``<run>/wandb/offline-run-*`` and ``wandb sync`` uploads it later. The project defaults to the
  recipe's ``name``; the W&B run id is kept in ``<run>/wandb_run_id``, so that every stage, a resumed
  run and the end of the run log to the same W&B run.
- What: the resolved recipe (``<run>/recipe.json``) as the run's config; every logged value of a stage
  as ``<stage>/<key>`` against the stage's own step axis ``<stage>/step`` (each stage's steps restart at
  1, and W&B's own step must only grow); at the end of the run (``CallbackPlugin.finish``) the report's
  PNGs as images under ``report/``, the evaluation matrix as a table, then the run is finished and
  its files flushed.
- Only the main process (``RANK`` 0, or unset) builds the callback and logs.

Not a default callback: a recipe names it, ``callbacks = ["progress", "metrics_jsonl", "wandb"]``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from recipes.api import CallbackPlugin, RunContext, StageContext, hookimpl

REQUIRES_RECIPES_API = 1
RUN_ID_FILE = "wandb_run_id"


def main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def open_run(run_dir: Path):
    """The W&B run of this run folder: the one this process has open, else started (or resumed by the
    id kept in the run folder) with the resolved recipe as its config."""
    import wandb

    id_file = Path(run_dir) / RUN_ID_FILE
    known = id_file.read_text(encoding="utf-8").strip() if id_file.is_file() else None
    if wandb.run is not None and known is not None and wandb.run.id == known:
        return wandb.run
    recipe = json.loads((Path(run_dir) / "recipe.json").read_text(encoding="utf-8"))
    name = str((recipe.get("recipe") or {}).get("name") or Path(run_dir).name)
    run = wandb.init(project=os.environ.get("WANDB_PROJECT") or name, name=name, id=known, resume="allow",
                     dir=str(Path(run_dir).resolve()), config=recipe, reinit="finish_previous")
    id_file.write_text(run.id, encoding="utf-8")
    return run


def build_tracker(context: StageContext):
    if not main_process():
        return None
    from transformers import TrainerCallback

    stage = context.stage_name

    class WandbTracker(TrainerCallback):
        """Logs the stage's numbers as ``<stage>/<key>`` against ``<stage>/step``."""

        def __init__(self):
            self.run = open_run(context.run_dir)
            self.run.define_metric(f"{stage}/step")
            self.run.define_metric(f"{stage}/*", step_metric=f"{stage}/step")

        def on_log(self, args, state, control, logs=None, **kwargs):
            values = context.stage_metrics(logs)
            if values and state.is_world_process_zero:
                self.run.log({f"{stage}/step": state.global_step, **values})

        def on_train_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.run.summary[f"{stage}/trained_steps"] = state.global_step

    return WandbTracker()


def finish_run(context: RunContext) -> None:
    """The report's PNGs and the evaluation matrix, then the run is finished and W&B's files flushed
    (offline: the run folder is complete when ``recipes run`` returns)."""
    if not main_process():
        return
    import wandb

    run = open_run(context.run_dir)
    images = {f"report/{png.stem}": wandb.Image(str(png)) for png in context.report_charts()}
    rows = context.eval_matrix_rows()
    if rows:
        images["report/eval_matrix_table"] = wandb.Table(columns=["after", "set", "loss", "perplexity"], data=rows)
    if images:
        run.log(images)
    for path in context.report_files():
        run.save(str(path), base_path=str(Path(context.report_dir).parent), policy="now")
    run_id, where = run.id, run.dir
    run.finish()
    wandb.teardown()
    context.console.print(f"wandb: run {run_id} ({context.run_name}) in {Path(where).parent}", highlight=False)


@hookimpl
def register_callbacks():
    return [CallbackPlugin("wandb", build_tracker, default=False, finish=finish_run,
                           description="Weights & Biases run (WANDB_MODE=offline: under <run>/wandb): recipe as "
                                       "config, <stage>/<metric>, the report's PNGs and evaluation matrix.")]
