"""The end of a run for callback plugins: each ``CallbackPlugin.finish`` of the plan's callbacks, once,
on the main process, after every stage ran and the report was written (``recipes run``)."""

from __future__ import annotations

from pathlib import Path

from recipes.errors import RecipeError
from recipes.plugins.hookspecs import RunContext


def finish_callbacks(plan, report_dir: Path, console) -> None:
    context = RunContext(run_dir=plan.run_dir, report_dir=Path(report_dir), run_name=plan.name,
                         stage_names=tuple(stage.name for stage in plan.stages), console=console)
    for plugin in plan.callbacks:
        if plugin.finish is None:
            continue
        try:
            plugin.finish(context)
        except RecipeError:
            raise
        except Exception as exc:
            raise RecipeError(f"callback {plugin.name!r} failed at the end of the run: {type(exc).__name__}: "
                              f"{exc}; the run folder {plan.run_dir} is complete") from exc
