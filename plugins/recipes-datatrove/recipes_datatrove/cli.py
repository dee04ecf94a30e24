"""``recipes-datatrove clean RECIPE --stage NAME --out DIR``: a stage's training sources cleaned and
deduplicated as datatrove pipelines (``pipeline``) on this machine, a Slurm cluster or a Ray cluster
(``executors``), into shards that ``recipes prepare`` then tokenizes.

Run it again with the same arguments to resume: finished tasks are not run again. An output folder
holding another cleaning (other settings, files or task count) is refused rather than mixed with it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

VERSION = 1  # of the output layout; part of the fingerprint


def _near_here(options, context):
    raise RuntimeError("near duplicates are removed by datatrove's MinHash steps here, never by this filter")


def _stand_in():
    from recipes.api import DocumentFilter

    from recipes_datatrove.lsh import NearOptions

    return DocumentFilter("near_dedup", _near_here, NearOptions, scope="corpus",
                          description="near duplicates: datatrove's MinHash steps (recipes-datatrove)")


@click.group()
def main():
    """Clean a recipe's corpus with datatrove, beyond one machine."""


def fingerprint(stage, tasks: int) -> dict:
    """What decides the output: the stage's sources (files with size and time, format, options,
    cleaning settings) and the task count (which document stays of two copies does not depend on it,
    but the shards' names do)."""
    def files(paths):
        return [[path, Path(path).stat().st_size, Path(path).stat().st_mtime_ns] for path in paths]

    sources = [{"name": s.name, "format": s.format.name, "options": s.options.model_dump(mode="json"),
                "files": files(s.files), "dedup": s.cleaning.dedup, "near_threshold": s.cleaning.near_threshold,
                "normalize": s.cleaning.normalize, "script": s.cleaning.script,
                "filters": [list(f) for f in s.cleaning.filters],
                "checks": [identity for *_, identity in s.cleaning.checks]} for s in stage.sources]
    return {"version": VERSION, "recipe": stage.recipe, "stage": stage.name, "tasks": tasks, "sources": sources}


def claim(out: Path, stage, tasks: int) -> None:
    from recipes.api import RecipeError

    mark, wanted = out / "run.json", fingerprint(stage, tasks)
    if mark.is_file():
        if json.loads(mark.read_text(encoding="utf-8")) != wanted:
            raise RecipeError(f"--out {out}: it holds another cleaning (other sources, settings or --tasks); give "
                              "another folder, or remove this one to start over")
        return
    if out.exists() and any(out.iterdir()):
        raise RecipeError(f"--out {out}: not empty and not a recipes-datatrove output; give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    mark.write_text(json.dumps(wanted, indent=2, ensure_ascii=False), encoding="utf-8")


def check_stage(stage, tasks: int) -> None:
    from recipes.api import RecipeError

    from recipes_datatrove.exact import MAX_TASKS
    from recipes_datatrove.pipeline import near_settings

    if stage.records != "documents":
        raise RecipeError(f"stage {stage.name!r} trains on {stage.records}; recipes-datatrove cleans pre-training "
                          "documents (clean the others in `recipes prepare`)")
    for source in stage.sources:
        if source.corpus_filters:
            raise RecipeError(f"source {source.name!r}: the filter {source.corpus_filters[0]!r} keeps state over the "
                              "whole stage in one process (scope \"corpus\"); the datatrove pipeline runs in parallel "
                              "tasks: leave it to `recipes prepare`, or remove it here")
    near_settings(stage)  # one MinHash index: the near sources' settings agree
    if tasks >= MAX_TASKS:
        raise RecipeError(f"--tasks {tasks}: at most {MAX_TASKS - 1} (datatrove's exact dedup ranks copies by task)")


@main.command()
@click.argument("recipe")
@click.option("--stage", "stage_name", required=True, help="The stage whose training sources to clean.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (a shared file system "
              "for Slurm and Ray): shards/, removed/, removed.json, recipe-fragment.toml, PREPARE.md.")
@click.option("--executor", type=click.Choice(["local", "slurm", "ray"]), default="local", show_default=True)
@click.option("--tasks", type=click.IntRange(min=1), default=1, show_default=True,
              help="Parallel tasks of the reading and dedup steps (each reads a contiguous run of the files).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Tasks running at once (local: processes here; Slurm: array jobs at once; Ray: tasks at once).")
@click.option("--partition", default="", help="Slurm partition.")
@click.option("--time", "time_limit", default="24:00:00", show_default=True, help="Slurm time limit per task.")
@click.option("--cpus-per-task", type=click.IntRange(min=1), default=1, show_default=True, help="Slurm and Ray.")
@click.option("--mem-per-cpu-gb", type=click.FloatRange(min=0.1), default=2.0, show_default=True, help="Slurm and Ray.")
@click.option("--venv", default="", help="Slurm: the activate script each job sources (default: this environment's).")
@click.option("--sbatch-arg", "sbatch_args", multiple=True, metavar="KEY=VALUE", help="Slurm: an extra #SBATCH "
              "directive (e.g. account=proj). Repeatable.")
@click.option("--dry-run", is_flag=True, help="Slurm: write the sbatch scripts to OUT/slurm/ instead of submitting.")
@click.option("--verbose", is_flag=True, help="Local: datatrove's own log on the console too.")
def clean(recipe, stage_name, out, executor, tasks, workers, partition, time_limit, cpus_per_task, mem_per_cpu_gb,
          venv, sbatch_args, dry_run, verbose):
    """Clean and deduplicate the training sources of a stage of RECIPE into shards under OUT."""
    from recipes.api import RecipeError

    from recipes_datatrove.executors import Cluster

    try:
        extra = dict(arg.split("=", 1) if "=" in arg else (arg, "") for arg in sbatch_args)
        cluster = Cluster(partition, time_limit, cpus_per_task, mem_per_cpu_gb, venv, extra)
        run(recipe, stage_name, Path(out).resolve(), executor, tasks, workers, cluster, dry_run, verbose)
    except RecipeError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)


def run(recipe, stage_name, out: Path, executor, tasks, workers, cluster, dry_run, verbose) -> None:
    from recipes.api import RecipeError, stage_cleaning

    from recipes_datatrove.executors import console_to, executors
    from recipes_datatrove.pipeline import build_steps

    if dry_run and executor != "slurm":
        raise RecipeError("--dry-run writes the sbatch scripts of --executor slurm; add --executor slurm")
    if executor == "slurm" and not cluster.partition:
        raise RecipeError("--executor slurm needs --partition NAME")
    # datatrove's MinHash does near dedup: recipes-near-dedup need not be installed for dedup = "near"
    stage = stage_cleaning(recipe, stage_name, near_dedup=_stand_in())
    check_stage(stage, tasks)
    claim(out, stage, tasks)
    with console_to(None if verbose else out / "logs" / "console.log"):
        steps = build_steps(stage, str(out), tasks)
        made = executors(steps, executor, str(out), workers, cluster, verbose)
        launch(steps, made, executor, out, dry_run)


def launch(steps, made, executor: str, out: Path, dry_run: bool) -> None:
    from recipes.api import RecipeError

    from recipes_datatrove.executors import sbatch_recorded

    if executor == "slurm":
        if dry_run:
            with sbatch_recorded(out / "slurm") as submitted:
                made[-1].run()
            click.echo(f"{len(submitted)} sbatch scripts (one job array per step, each after the one before) in "
                       f"{out / 'slurm'}; nothing submitted")
        else:
            made[-1].run()  # submits every step's job array, chained by afterok
            click.echo(f"submitted {len(steps)} steps; when the last job ends: {out / 'PREPARE.md'}")
        return
    if executor == "ray":
        connect_ray()
    for number, (step, made_step) in enumerate(zip(steps, made), 1):
        click.echo(f"[{number}/{len(steps)}] {step.name}: {step.tasks} task{'s' if step.tasks > 1 else ''}")
        try:
            made_step.run()
        except RecipeError:
            raise
        except Exception as error:  # a task failed: its log has the traceback
            raise SystemExit(f"error: step {step.name} failed ({type(error).__name__}: {error}); its tasks' logs: "
                             f"{out / 'logs' / f'{number}-{step.name}' / 'logs'}; run the command again to resume")
    click.echo((out / "PREPARE.md").read_text(encoding="utf-8"))



def connect_ray() -> None:
    """The Ray cluster at ``RAY_ADDRESS`` (a local one without it), before the steps' tasks are sent."""
    from recipes.api import RecipeError

    try:
        import ray
    except ImportError:
        raise RecipeError("--executor ray needs Ray: pip install -e \"plugins/recipes-datatrove[ray]\"") from None
    ray.init(ignore_reinit_error=True)
