"""``callbacks = [..., "swanlab"]``: one SwanLab run per recipes run.

- Where: offline by default, under ``<run>/swanlog/run-<time>-<id>``: nothing logs in and nothing is
  uploaded (``swanlab sync <that folder>`` uploads it later). SwanLab's own ``SWANLAB_MODE`` chooses
  another mode (``online`` logs in through ``swanlab login``; ``local`` needs ``swanlab[dashboard]``),
  and ``SWANLAB_LOG_DIR`` another folder. The project and the run are named after the recipe's
  ``name``; the run id is kept in ``<run>/swanlab_run_id``, so that every stage and the end of the run
  log to the same SwanLab run, and a resumed run reuses the id (offline, in a second folder that
  ``swanlab sync`` joins to the first).
- What: the resolved recipe (``<run>/recipe.json``) as the run's config; every logged value of a stage
  as ``<stage>/<key>`` at the stage's own global step (SwanLab keeps a step axis per key, so each
  stage's steps start at 1 again; the evaluation before training is step 0); at the end of the run
  (``CallbackPlugin.finish``) the report's PNGs as images under ``report/``, the evaluation matrix as a
  table (``report/eval_matrix``), ``report.md`` and ``report.json`` as files; then the run is finished.
- Only the main process (``RANK`` 0, or unset) builds the callback and logs.

Not a default callback: a recipe names it, ``callbacks = ["progress", "metrics_jsonl", "swanlab"]``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from recipes.api import CallbackPlugin, RunContext, StageContext, hookimpl

REQUIRES_RECIPES_API = 1
RUN_ID_FILE = "swanlab_run_id"
LOG_FOLDER = "swanlog"


def main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def open_run(run_dir: Path):
    """The SwanLab run of this run folder: the one this process has open, else started (or resumed by
    the id kept in the run folder) with the resolved recipe as its config."""
    import swanlab

    id_file = Path(run_dir) / RUN_ID_FILE
    known = id_file.read_text(encoding="utf-8").strip() if id_file.is_file() else None
    if swanlab.has_run() and known is not None and swanlab.get_run().id == known:
        return swanlab.get_run()
    recipe = json.loads((Path(run_dir) / "recipe.json").read_text(encoding="utf-8"))
    name = str((recipe.get("recipe") or {}).get("name") or Path(run_dir).name)
    where = {} if os.environ.get("SWANLAB_LOG_DIR") else {"log_dir": str(Path(run_dir).resolve() / LOG_FOLDER)}
    mode = None if os.environ.get("SWANLAB_MODE") else "offline"  # SwanLab's own setting wins
    run = swanlab.init(project=name, name=name, mode=mode, config=recipe, reinit=True,
                       **({"id": known, "resume": "allow"} if known else {}), **where)
    id_file.write_text(run.id, encoding="utf-8")
    return run


def build_tracker(context: StageContext):
    if not main_process():
        return None
    from transformers import TrainerCallback

    class SwanLabTracker(TrainerCallback):
        """Logs the stage's numbers as ``<stage>/<key>`` at the stage's global step."""

        def __init__(self):
            self.run = open_run(context.run_dir)

        def on_log(self, args, state, control, logs=None, **kwargs):
            values = context.stage_metrics(logs)
            if values and state.is_world_process_zero:
                self.run.log(values, step=state.global_step)

    return SwanLabTracker()


def finish_run(context: RunContext) -> None:
    """The report's PNGs, the evaluation matrix and the report's files, then the run is finished
    (offline: its folder is complete when ``recipes run`` returns)."""
    if not main_process():
        return
    import swanlab

    run = open_run(context.run_dir)
    media = {f"report/{png.stem}": swanlab.Image(str(png)) for png in context.report_charts()}
    rows = context.eval_matrix_rows()
    if rows:
        media["report/eval_matrix"] = swanlab.echarts.Table().add(["after", "set", "loss", "perplexity"], rows)
    if media:
        run.log(media)
    for path in context.report_files():
        run.save(str(path), base_path=str(Path(context.report_dir).parent), policy="now")
    run_id, folder = run.id, run.dir
    run.finish()
    context.console.print(f"swanlab: run {run_id} ({context.run_name}) in {folder}", highlight=False)


@hookimpl
def register_callbacks():
    return [CallbackPlugin("swanlab", build_tracker, default=False, finish=finish_run,
                           description="SwanLab run (offline by default: under <run>/swanlog): recipe as config, "
                                       "<stage>/<metric>, the report's PNGs and evaluation matrix.")]
