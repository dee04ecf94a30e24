"""``callbacks = [..., "mlflow"]``: one MLflow run per recipes run.

- Where: ``MLFLOW_TRACKING_URI`` when set, else a file store in the run folder,
  ``file:<run>/mlflow`` (MLflow 3 keeps its file store behind ``MLFLOW_ALLOW_FILE_STORE=true``, which
  this plugin sets for that URI only when it is unset). The experiment and the run are named after
  the recipe's ``name``; the run's id is kept in ``<run>/mlflow_run_id``, so that every stage, a
  resumed run and the end of the run log to the same MLflow run.
- What: the resolved recipe (``<run>/recipe.json``) as flattened params (``recipe.name``, ``stages.0.settings...``)
  and as the artifact ``recipe.json``; every logged value of a stage as the metric
  ``<stage>/<key>`` at the stage's global step (``domain/loss``, ``sft/eval_loss``, ...); at the end
  of the run (``CallbackPlugin.finish``) the report's files under ``report/`` (loss.png, eval.png,
  report.md, report.json), then the run is marked finished.
- Only the main process (``RANK`` 0, or unset) builds the callback and logs.

Not a default callback: a recipe names it, ``callbacks = ["progress", "metrics_jsonl", "mlflow"]``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from recipes.api import CallbackPlugin, RunContext, StageContext, hookimpl

REQUIRES_RECIPES_API = 1
RUN_ID_FILE = "mlflow_run_id"
PARAMS_PER_BATCH = 100  # MLflow's limit for one log_batch
PARAM_VALUE_LIMIT = 6000


def main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def tracking_uri(run_dir: Path) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (Path(run_dir).resolve() / "mlflow").as_uri()


def flatten(value, prefix: str = "") -> dict[str, str]:
    """{"a": {"b": [1, 2]}} -> {"a.b.0": "1", "a.b.1": "2"}: MLflow params are flat strings."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list) and value and all(isinstance(v, (dict, list)) for v in value):
        items = enumerate(value)
    else:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return {prefix: text[:PARAM_VALUE_LIMIT]}
    out: dict[str, str] = {}
    for key, item in items:
        out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def open_run(run_dir: Path):
    """(client, run id): the MLflow run of this run folder, created with its params on first use."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri(run_dir))
    id_file = Path(run_dir) / RUN_ID_FILE
    if id_file.is_file():
        return client, id_file.read_text(encoding="utf-8").strip()
    recipe_file = Path(run_dir) / "recipe.json"
    recipe = json.loads(recipe_file.read_text(encoding="utf-8"))
    name = str((recipe.get("recipe") or {}).get("name") or Path(run_dir).name)
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    run = client.create_run(experiment_id, run_name=name, tags={"recipes.run_dir": str(Path(run_dir).resolve())})
    params = [Param(key, value) for key, value in flatten(recipe).items()]
    for start in range(0, len(params), PARAMS_PER_BATCH):
        client.log_batch(run.info.run_id, params=params[start:start + PARAMS_PER_BATCH])
    client.log_artifact(run.info.run_id, str(recipe_file))
    id_file.write_text(run.info.run_id, encoding="utf-8")
    return client, run.info.run_id


def build_tracker(context: StageContext):
    if not main_process():
        return None
    from transformers import TrainerCallback

    class MlflowTracker(TrainerCallback):
        """Logs the stage's numbers as ``<stage>/<key>`` to the run folder's MLflow run."""

        def __init__(self):
            self.client, self.run_id = open_run(context.run_dir)

        def on_log(self, args, state, control, logs=None, **kwargs):
            import time

            from mlflow.entities import Metric

            if not logs or not state.is_world_process_zero:
                return
            now = int(time.time() * 1000)
            metrics = [Metric(f"{context.stage_name}/{key}", float(value), now, state.global_step)
                       for key, value in logs.items()
                       if isinstance(value, (int, float)) and not isinstance(value, bool)]
            if metrics:
                self.client.log_batch(self.run_id, metrics=metrics)

        def on_train_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.client.set_tag(self.run_id, f"recipes.stage.{context.stage_name}", f"trained {state.global_step} steps")

    return MlflowTracker()


def finish_run(context: RunContext) -> None:
    """The report's PNGs and files as artifacts under ``report/``, then the run is finished."""
    if not main_process():
        return
    client, run_id = open_run(context.run_dir)
    for path in sorted(Path(context.report_dir).iterdir()):
        if path.is_file():
            client.log_artifact(run_id, str(path), artifact_path="report")
    client.set_terminated(run_id, "FINISHED")
    context.console.print(f"mlflow: run {run_id} ({context.run_name}) in {client.tracking_uri}", highlight=False)


@hookimpl
def register_callbacks():
    return [CallbackPlugin("mlflow", build_tracker, default=False, finish=finish_run,
                           description="MLflow run (file store in the run folder unless MLFLOW_TRACKING_URI): "
                                       "recipe as params, <stage>/<metric>, the report's PNGs as artifacts.")]
