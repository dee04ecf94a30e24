"""Built-in training callbacks: a rich progress bar, a metrics-to-JSON-lines writer and, when the
`tensorboard` package is installed, TensorBoard event files."""

from __future__ import annotations

import importlib.util
import json
import logging
import time

from recipes.api import CallbackPlugin, StageContext, hookimpl


def build_progress(context: StageContext):
    """On a terminal, a rich progress bar; otherwise (nohup, SLURM, `tee`, a file) a plain line per
    logging step, as a bar drawn to a file shows nothing until the stage ends. Either way each logging
    step is a line in run.log."""
    from transformers import TrainerCallback

    log = logging.getLogger("recipes")
    terminal = context.console.is_terminal

    class TrainingProgress(TrainerCallback):
        """Step, loss, learning rate, tokens/s (of this process: a resumed stage counts from where it
        resumed) and ETA."""

        def __init__(self):
            self.progress = None
            self.task = None
            self.started, self.tokens_at_start, self.step_at_start = 0.0, 0, 0

        def _speed(self, state) -> float:
            tokens = (getattr(state, "num_input_tokens_seen", 0) or 0) - self.tokens_at_start
            return tokens / max(time.monotonic() - self.started, 1e-9)

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.monotonic()
            self.tokens_at_start = getattr(state, "num_input_tokens_seen", 0) or 0
            self.step_at_start = state.global_step
            if not terminal:
                return
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.progress = Progress(
                TextColumn(f"[bold]{context.stage_name}[/] ({context.stage_index + 1}/{context.stage_count})"),
                BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} tok/s"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=context.console, transient=False)
            self.task = self.progress.add_task("train", total=state.max_steps, loss="-", speed="-",
                                               completed=state.global_step)
            self.progress.start()

        def on_step_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step, speed=f"{self._speed(state):,.0f}")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs or not state.is_world_process_zero:
                return
            if self.progress is not None:
                self.progress.update(self.task, loss=f"{logs['loss']:.4f}")
            line = step_line(context.stage_name, state.global_step, state.max_steps, logs, self._speed(state),
                             self._eta(state))
            log.info(line)
            if self.progress is None:
                context.console.print(line, markup=False, highlight=False, soft_wrap=True)

        def _eta(self, state) -> float | None:
            done = state.global_step - self.step_at_start
            if done <= 0 or not state.max_steps:
                return None
            return (time.monotonic() - self.started) / done * (state.max_steps - state.global_step)

        def on_train_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)
                self.progress.stop()

    return TrainingProgress()


def step_line(stage: str, step: int, total: int, logs: dict, speed: float, eta: float | None) -> str:
    """One logging step as a plain line: ``STAGE step N/M: loss L, lr R, T tok/s, ETA h:mm:ss``."""
    rate = logs.get("learning_rate")
    left = "-" if eta is None else f"{int(eta) // 3600}:{int(eta) % 3600 // 60:02d}:{int(eta) % 60:02d}"
    return (f"{stage} step {step}/{total}: loss {logs['loss']:.4f}"
            + (f", lr {rate:.3g}" if isinstance(rate, (int, float)) else "")
            + f", {speed:,.0f} tok/s, ETA {left}")


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
                       description="A rich progress bar per stage on a terminal, a plain line per logging step "
                                   "otherwise (and in run.log): step, loss, learning rate, tokens/s, ETA."),
        CallbackPlugin("metrics_jsonl", build_metrics, default=True,
                       description="Every logged metric as a JSON line in <run>/metrics.jsonl."),
        CallbackPlugin("tensorboard", build_tensorboard, default=tensorboard_installed(),
                       description="TensorBoard event files in <run>/tensorboard/<stage> (on by default "
                                   "when the tensorboard package is installed)."),
    ]
