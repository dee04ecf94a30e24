"""Built-in training callbacks: a rich progress bar, a metrics-to-JSON-lines writer and, when the
`tensorboard` package is installed, TensorBoard event files."""

from __future__ import annotations

import importlib.util
import json
import time

from recipes.api import CallbackPlugin, StageContext, hookimpl


def build_progress(context: StageContext):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        """One bar per stage: step, loss, tokens/s, ETA."""

        def __init__(self):
            self.progress = None
            self.task = None
            self.started = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.progress = Progress(
                TextColumn(f"[bold]{context.stage_name}[/] ({context.stage_index + 1}/{context.stage_count})"),
                BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} tok/s"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=context.console, transient=False)
            self.task = self.progress.add_task("train", total=state.max_steps, loss="-", speed="-")
            self.started = time.monotonic()
            self.progress.start()

        def on_step_end(self, args, state, control, **kwargs):
            elapsed = max(time.monotonic() - self.started, 1e-9)
            tokens = getattr(state, "num_input_tokens_seen", 0) or 0
            self.progress.update(self.task, completed=state.global_step, speed=f"{tokens / elapsed:,.0f}")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and self.progress is not None:
                self.progress.update(self.task, loss=f"{logs['loss']:.4f}")

        def on_train_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)
                self.progress.stop()

    return RichProgress()


def build_metrics(context: StageContext):
    from transformers import TrainerCallback

    class MetricsJsonl(TrainerCallback):
        """Appends every logged dict to the run's metrics.jsonl, one JSON object a line."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or not state.is_world_process_zero:
                return
            row = {"stage": context.stage_name, "step": state.global_step, "epoch": state.epoch,
                   "tokens": getattr(state, "num_input_tokens_seen", None), "time": time.time(), **logs}
            with open(context.metrics_path, "a", encoding="utf-8") as out:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")

    return MetricsJsonl()


def build_tensorboard(context: StageContext):
    """transformers' own TensorBoardCallback, writing to <run>/tensorboard/<stage> (one folder per
    stage, so that `tensorboard --logdir <run>/tensorboard` shows the stages side by side)."""
    import os

    if int(os.environ.get("RANK", "0")) != 0:  # one event file per run, not one per rank (issue 18)
        return None
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(SummaryWriter(log_dir=str(tensorboard_dir(context.run_dir, context.stage_name))))


def tensorboard_dir(run_dir, stage_name: str):
    from pathlib import Path

    return Path(run_dir) / "tensorboard" / stage_name


def tensorboard_installed() -> bool:
    """Whether the tensorboard package is importable (found without importing it: plugins load cheap)."""
    return importlib.util.find_spec("tensorboard") is not None


@hookimpl
def register_callbacks():
    return [
        CallbackPlugin("progress", build_progress, default=True,
                       description="A rich progress bar per stage: step, loss, tokens/s, ETA."),
        CallbackPlugin("metrics_jsonl", build_metrics, default=True,
                       description="Every logged metric as a JSON line in <run>/metrics.jsonl."),
        CallbackPlugin("tensorboard", build_tensorboard, default=tensorboard_installed(),
                       description="TensorBoard event files in <run>/tensorboard/<stage> (on by default "
                                   "when the tensorboard package is installed)."),
    ]
