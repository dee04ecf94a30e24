"""The steps (``pipeline``) on one of datatrove's executors, one executor per step, each logging into
``out/logs/<n>-<step>/`` (its task logs, stats, and the completion marks that let a run resume: a task
that finished is not run again).

- ``local``: this machine, ``workers`` tasks at a time (``LocalPipelineExecutor``); run one step after
  the other here. Several machines sharing the output folder can each run a slice of the tasks of the
  parallel steps with datatrove's ``local_tasks``/``local_rank_offset`` (docs/datatrove.md).
- ``slurm``: one sbatch job array per step, each depending on the one before (``afterok``), submitted
  from here by ``SlurmPipelineExecutor``; ``dry_run`` writes the sbatch scripts it would submit (and the
  pickled pipelines they run) without calling ``sbatch``.
- ``ray``: ``RayPipelineExecutor`` on the Ray cluster ``ray.init()`` connects to (``RAY_ADDRESS``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from datatrove.executor.local import LocalPipelineExecutor


class QuietLocalExecutor(LocalPipelineExecutor):
    """datatrove's local executor with its console log (INFO lines, progress bars, the traceback of a
    failed task) kept in the task's log file only: the command prints one line per step, and a bad
    record's error as one line."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        with open(os.devnull, "w") as nowhere, contextlib.redirect_stderr(nowhere):  # the task's log file has it
            return super()._run_for_rank(rank, local_rank, node_rank)


@contextlib.contextmanager
def console_to(path: Path | None):
    """datatrove's console log (this process's: the steps' stats, its warnings) appended to ``path``
    instead of the console; nothing changes with ``path`` None (``--verbose``)."""
    if path is None:
        yield
        return
    from datatrove.utils.logging import setup_default_logger

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "a", encoding="utf-8") as handle, contextlib.redirect_stderr(handle):
            setup_default_logger()  # its sink is the stderr of the moment: the file
            yield
    finally:
        setup_default_logger()


@dataclass
class Cluster:
    """What a Slurm or Ray executor needs beyond the task counts."""

    partition: str = ""
    time: str = "24:00:00"
    cpus_per_task: int = 1
    mem_per_cpu_gb: float = 2
    venv: str = ""  # the virtual environment each Slurm job activates (default: this one)
    sbatch_args: dict = field(default_factory=dict)


def executors(steps, kind: str, out: str, workers: int, cluster: Cluster, verbose: bool = False) -> list:
    made, previous = [], None
    for number, step in enumerate(steps, 1):
        logs = f"{out}/logs/{number}-{step.name}"
        parallel = workers if step.tasks > 1 else 1
        if kind == "local":
            local = LocalPipelineExecutor if verbose else QuietLocalExecutor
            made.append(local(step.pipeline, tasks=step.tasks, workers=min(parallel, step.tasks), logging_dir=logs))
        elif kind == "slurm":
            from datatrove.executor.slurm import SlurmPipelineExecutor

            previous = SlurmPipelineExecutor(
                step.pipeline, tasks=step.tasks, time=cluster.time, partition=cluster.partition,
                cpus_per_task=cluster.cpus_per_task, mem_per_cpu_gb=cluster.mem_per_cpu_gb,
                workers=workers if step.tasks > 1 else -1,
                job_name=f"recipes-{step.name}", venv_path=cluster.venv or str(Path(sys.prefix) / "bin" / "activate"),
                sbatch_args=cluster.sbatch_args, depends=previous, logging_dir=logs)
            made.append(previous)
        else:
            from datatrove.executor.ray import RayPipelineExecutor

            made.append(RayPipelineExecutor(step.pipeline, tasks=step.tasks, workers=workers, logging_dir=logs,
                                            cpus_per_task=cluster.cpus_per_task, mem_per_cpu_gb=cluster.mem_per_cpu_gb))
    return made


@contextlib.contextmanager
def sbatch_recorded(into: Path):
    """datatrove's Slurm launch path with ``sbatch`` replaced by a recorder: each script it would submit
    is written to ``into/<n>-<job>.sbatch`` (``-merge-stats`` for the job datatrove adds after each
    step to add its stats up) with the ``sbatch`` arguments (the dependency) on the comment line after
    the shebang, and a made-up job id is returned so that the next step's dependency names it."""
    from datatrove.executor import slurm

    into.mkdir(parents=True, exist_ok=True)
    submitted = []

    def record(contents: str, job_id_retriever, *args) -> str:
        job_id = str(1000 + len(submitted))
        name = next(line.split("=", 1)[1] for line in contents.splitlines() if line.startswith("#SBATCH --job-name="))
        name += "-merge-stats" if "merge_stats " in contents else ""
        shebang, rest = contents.split("\n", 1)
        (into / f"{len(submitted) + 1}-{name}.sbatch").write_text(
            f"{shebang}\n# sbatch {' '.join(args)} <this file>   (job id {job_id} in this dry run)\n{rest}",
            encoding="utf-8")
        submitted.append(job_id)
        return job_id

    original = slurm.launch_slurm_job
    slurm.launch_slurm_job = record
    try:
        yield submitted
    finally:
        slurm.launch_slurm_job = original
