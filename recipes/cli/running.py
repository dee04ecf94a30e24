"""`recipes run`: every stage of a recipe, in order, resumable."""

from __future__ import annotations

import click

from recipes.errors import RecipeError, TrainingError
from recipes.cli.common import main, _console, _quiet_console, friendly


@main.command()
@click.argument("recipe")
@click.option("--output-dir", "-o", help="Run folder (default: the recipe's output_dir, else runs/<name>, both "
              "beside the recipe file).")
@click.option("--stage", "stage", metavar="NAME", help="Run the stages up to NAME and stop (earlier finished stages "
              "are reused as usual).")
@click.option("--until", "until", metavar="NAME", help="The same as --stage NAME.")
@click.option("--force", is_flag=True, help="Run into a run folder that holds another recipe's run (its stages are "
              "trained again where this recipe's differ).")
@click.option("--restart", multiple=True, metavar="STAGE",
              help="Train STAGE afresh (and the stages after it) even if it finished. Repeatable.")
@click.option("--nproc", type=click.IntRange(min=1), default=None,
              help="Processes (GPUs) per node, data-parallel through torchrun. Default: every visible GPU "
                   "(one process each), 1 on CPU; --nproc 1 trains on one GPU.")
@click.option("--nnodes", type=click.IntRange(min=1), default=1, show_default=True, help="Nodes.")
@click.option("--node-rank", type=click.IntRange(min=0), default=0, show_default=True, help="This node's rank.")
@click.option("--master-addr", help="Address of the rank-0 node (several nodes).")
@click.option("--master-port", type=int, help="Port on the rank-0 node (default 29500).")
@friendly
def run(recipe, output_dir, stage, until, restart, nproc, nnodes, node_rank, master_addr, master_port, force):
    """Run every stage of RECIPE (a file, or a bundled recipe name) in order.

    Run it again after a crash or Ctrl-C: finished stages are kept, an interrupted one resumes from
    its last checkpoint, and a stage whose inputs changed is trained again with the ones after it."""
    from recipes.config.load import load_recipe
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry

    registry = get_registry()
    loaded = load_recipe(recipe, registry, preflight="run")  # validation and every stage's data first
    from recipes.training import distributed

    from rich.markup import escape

    err = _console(stderr=True)
    for warning in (loaded.warnings if not distributed.launched() else []):  # said once, by the launcher
        err.print(f"[yellow]warning:[/] {escape(str(warning))}", markup=True, highlight=False)
    if stage and until and stage != until:
        raise RecipeError(f"--stage {stage} and --until {until}: give one of them")
    last = stage or until
    plan = make_plan(loaded, registry, output_dir).up_to(last, "--stage" if stage else "--until")
    try:
        plan.run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RecipeError(f"run folder {plan.run_dir}: cannot create it ({exc.strerror}); give another (-o)") from None
    from recipes.config.schema import did_you_mean

    unknown = [name for name in restart if name not in {s.name for s in plan.stages}]
    if unknown:
        raise RecipeError([f"--restart {name}: no such stage; {did_you_mean(name, [s.name for s in plan.stages])}"
                           for name in unknown])
    nproc, note = _processes(nproc)  # all visible GPUs by default, never nn.DataParallel
    if note:
        err.print(note, highlight=False)
    if (nproc > 1 or nnodes > 1) and not distributed.launched():
        argv = ["run", str(loaded.path), "-o", str(plan.run_dir), *(f"--restart={name}" for name in restart),
                *([f"--until={last}"] if last else []), *(["--force"] if force else [])]
        code = distributed.launch(argv, nproc, nnodes, node_rank, master_addr, master_port)
        if code:
            raise TrainingError(f"a process of the {nproc * nnodes}-process run failed (exit code {code}; "
                                f"torchrun's output above names the rank); see {plan.run_dir / 'run.log'}. Run "
                                "the same command again to resume")
        return
    from recipes.run.runner import run_plan

    console = _console() if distributed.is_main() else _quiet_console()
    trained = run_plan(plan, console, registry, tuple(restart), force)
    if distributed.is_main():
        drawn = plan.run_dir / "report" / "report.json"
        manifest = plan.run_dir / "manifest.json"
        if not trained and drawn.is_file() and drawn.stat().st_mtime >= manifest.stat().st_mtime:
            console.print(f"report: {drawn.parent} (unchanged; `recipes report {plan.run_dir}` prints it)")
            return
        from recipes.outputs.report import write_report
        from recipes.run.finish import finish_callbacks

        finish_callbacks(plan, write_report(plan.run_dir, console), console)  # CallbackPlugin.finish hooks



def _processes(requested):
    import os

    from recipes.training.distributed import processes_to_launch, visible_gpus

    return processes_to_launch(requested, visible_gpus(), os.environ)  # no torch: a finished plan's re-run stays fast

@main.command(name="prepare")
@click.argument("recipe")
@click.option("--stage", "stage_name", help="Only this stage (default: every stage).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Tokenizing processes (default: the available cores; or $RECIPES_DATA_WORKERS).")
@friendly
def prepare_command(recipe, stage_name, workers):
    """Tokenize every stage's data into the token store ahead of a run (no GPU needed)."""
    from recipes.run.ahead import prepare_recipe

    prepare_recipe(recipe, stage_name, workers, click.echo)
