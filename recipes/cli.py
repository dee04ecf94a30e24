"""The command line. Thin: parse, call one function, turn our errors into one-line messages.

Exit codes: 0 done, 1 training failed, 2 bad input, 130 interrupted.
torch and transformers are imported only inside the commands that need them (`run`, `export`).
"""

from __future__ import annotations

import shutil
import sys
from functools import wraps
from pathlib import Path

import click

from recipes import __version__
from recipes.errors import Interrupted, RecipeError, TrainingError


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _quiet_console():
    import io

    from rich.console import Console

    return Console(file=io.StringIO())


def _fail(lines: list[str], code: int):
    err = _console(stderr=True)
    for line in lines:
        err.print(f"[red]error:[/] {line}", markup=True, highlight=False, soft_wrap=True)
    sys.exit(code)


def friendly(command):
    """Our errors become one line each (exit 2); training failures exit 1; Ctrl-C exits 130."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RecipeError as exc:
            _fail([str(p) for p in exc.problems], 2)
        except TrainingError as exc:
            _fail([str(exc)], 1)
        except Interrupted as exc:
            _console(stderr=True).print(f"interrupted: {exc}", highlight=False)
            sys.exit(130)
        except KeyboardInterrupt:
            _console(stderr=True).print("interrupted; run the same command again to continue (finished "
                                        "stages are kept, an interrupted one resumes from its last checkpoint)")
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="recipes")
def main():
    """Run a whole Qwen domain-adaptation plan (continued pre-training, then SFT) from one recipe."""


@main.command()
@click.argument("recipe")
@click.option("--output-dir", "-o", help="Run folder (default: the recipe's output_dir, else runs/<name>).")
@click.option("--restart", multiple=True, metavar="STAGE",
              help="Train STAGE afresh (and the stages after it) even if it finished. Repeatable.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes (GPUs) per node: data-parallel through torchrun.")
@click.option("--nnodes", type=click.IntRange(min=1), default=1, show_default=True, help="Nodes.")
@click.option("--node-rank", type=click.IntRange(min=0), default=0, show_default=True, help="This node's rank.")
@click.option("--master-addr", help="Address of the rank-0 node (several nodes).")
@click.option("--master-port", type=int, help="Port on the rank-0 node (default 29500).")
@friendly
def run(recipe, output_dir, restart, nproc, nnodes, node_rank, master_addr, master_port):
    """Run every stage of RECIPE (a file, or a bundled recipe name) in order.

    Run it again after a crash or Ctrl-C: finished stages are kept, an interrupted one resumes from
    its last checkpoint, and a stage whose inputs changed is trained again with the ones after it."""
    from recipes.config.load import load_recipe
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry

    registry = get_registry()
    loaded = load_recipe(recipe, registry, preflight="run")  # validation and every stage's data first
    from recipes.training import distributed

    err = _console(stderr=True)
    for warning in (loaded.warnings if not distributed.launched() else []):  # said once, by the launcher
        err.print(f"[yellow]warning:[/] {warning}", markup=True, highlight=False)
    plan = make_plan(loaded, registry, output_dir)
    try:
        plan.run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RecipeError(f"run folder {plan.run_dir}: cannot create it ({exc.strerror}); give another (-o)") from None
    from recipes.config.schema import did_you_mean

    unknown = [name for name in restart if name not in {s.name for s in plan.stages}]
    if unknown:
        raise RecipeError([f"--restart {name}: no such stage; {did_you_mean(name, [s.name for s in plan.stages])}"
                           for name in unknown])
    if (nproc > 1 or nnodes > 1) and not distributed.launched():
        argv = ["run", str(loaded.path), "-o", str(plan.run_dir), *(f"--restart={name}" for name in restart)]
        code = distributed.launch(argv, nproc, nnodes, node_rank, master_addr, master_port)
        if code:
            raise TrainingError(f"a process of the {nproc * nnodes}-process run failed (exit code {code}; "
                                f"torchrun's output above names the rank); see {plan.run_dir / 'run.log'}. Run "
                                "the same command again to resume")
        return
    from recipes.run.runner import run_plan

    console = _console() if distributed.is_main() else _quiet_console()
    trained = run_plan(plan, console, registry, tuple(restart))
    if distributed.is_main():
        drawn = plan.run_dir / "report" / "report.json"
        manifest = plan.run_dir / "manifest.json"
        if not trained and drawn.is_file() and drawn.stat().st_mtime >= manifest.stat().st_mtime:
            console.print(f"report: {drawn.parent} (unchanged; `recipes report {plan.run_dir}` prints it)")
            return
        from recipes.outputs.report import write_report

        write_report(plan.run_dir, console)


@main.command()
@click.argument("recipes", nargs=-1, required=True)
@click.option("--strict", is_flag=True, help="Treat warnings (likely-wrong settings) as errors.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (errors, warnings, plans).")
@friendly
def validate(recipes, strict, as_json):
    """Check recipe files (or bundled names) without loading anything heavy.

    Exit code 0 when every recipe is good, 2 when any has an error (or, with --strict, a warning)."""
    import json

    from recipes.config.load import check_recipe
    from recipes.plugins.registry import get_registry
    from recipes.planning.summary import summarize, summary_lines

    registry = get_registry()
    reports, error_lines, warning_lines = [], [], []
    for name in recipes:
        checked = check_recipe(name, registry, preflight=True)
        errors = checked.problems + (checked.warnings if strict else [])
        warnings = [] if strict else checked.warnings
        error_lines += [str(p) for p in errors]
        warning_lines += [str(p) for p in warnings]
        reports.append({"recipe": checked.name, "ok": not errors,
                        "errors": [p.as_dict() for p in errors], "warnings": [p.as_dict() for p in warnings],
                        "plan": summarize(checked.loaded) if checked.loaded and not errors else None})
    if as_json:
        click.echo(json.dumps({"ok": not error_lines, "recipes": reports}, indent=2, ensure_ascii=False))
        sys.exit(2 if error_lines else 0)
    console, err = _console(), _console(stderr=True)
    for line in warning_lines:
        err.print(f"[yellow]warning:[/] {line}", markup=True, highlight=False)
    for report in reports:
        if report["plan"] is not None:
            console.print(f"[green]ok[/] {report['recipe']}")
            for line in summary_lines(report["plan"]):
                console.print(f"  {line}", markup=False)
    if error_lines:
        _fail(error_lines, 2)


@main.command(name="plan")
@click.argument("recipe")
@click.option("--device", type=click.Choice(["gpu", "cpu"]), default="gpu", show_default=True,
              help="Estimate memory per GPU (precision auto = bf16), or for a CPU run (auto = fp32).")
@click.option("--tokenize", is_flag=True,
              help="Count tokens with the model's tokenizer (exact; imports transformers, needs the tokenizer "
                   "at hand) instead of estimating them from the data's size.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="GPUs the run will use: the per-GPU memory follows the recipe's [distributed] strategy.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@friendly
def plan_command(recipe, device, tokenize, nproc, as_json):
    """Per stage, before anything runs: parameters (total, trainable, share, LoRA layers), memory
    (weights, LoRA, gradients, optimizer, activations, logits and loss, total) and steps.

    No weights are loaded: shapes come from the model's config.json (a local folder, the HF cache,
    or the shipped configs of Qwen-7B and Qwen2.5-7B)."""
    import json

    from recipes.planning.estimate import estimate_lines, recipe_estimate
    from recipes.config.load import load_recipe
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry

    registry = get_registry()
    loaded = load_recipe(recipe, registry)
    estimate = recipe_estimate(loaded, make_plan(loaded, registry), "cuda" if device == "gpu" else "cpu", tokenize,
                               nproc)
    if as_json:
        click.echo(json.dumps(estimate, indent=2, ensure_ascii=False))
        return
    console = _console()
    for line in estimate_lines(estimate):
        console.print(line, markup=False)


@main.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
@friendly
def report(run_dir, as_json):
    """Re-draw the report of the run folder RUN: a table per stage (steps, tokens, time, tokens/s,
    final loss, eval perplexity before and after, peak memory) and RUN/report/ (report.md,
    report.json, loss.png, eval.png)."""
    from recipes.outputs.report import write_report

    folder = write_report(run_dir, None if as_json else _console())
    if as_json:
        click.echo((folder / "report.json").read_text(encoding="utf-8"), nl=False)


@main.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--to", "to", type=click.Path(path_type=Path), help="The folder to write (new, or empty; see --force).")
@click.option("--stage", help="The stage to export (default: the last one).")
@click.option("--merged", "what", flag_value="merged", default=True,
              help="An HF model folder: the adapter merged into the base (the default).")
@click.option("--adapter", "what", flag_value="adapter", help="The LoRA adapter (PEFT), its base named in it.")
@click.option("--dtype", help="--merged: bf16, fp16 or fp32 (default: as the stage saved it).")
@click.option("--max-shard-size", default="5GB", show_default=True, help="--merged: the largest safetensors file.")
@click.option("--force", is_flag=True, help="Replace --to even if it is not empty.")
@friendly
def export(run_dir, to, stage, what, dtype, max_shard_size, force):
    """Export a finished stage of the run folder RUN to a folder that works on its own: the merged
    model (loads in transformers and HF-folder inference servers) or the adapter, with the tokenizer
    and chat template. Written aside and moved into place when complete."""
    from recipes.outputs.export import export as write_export
    from recipes.outputs.export import export_request

    request = export_request(run_dir, to, stage, what, dtype, max_shard_size, force)  # no torch yet
    console = _console()
    for line in write_export(request):
        console.print(line, markup=False)


@main.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file (default: print).")
@friendly
def schema(output):
    """The JSON Schema of recipe files, with the installed plugins' options, for editors.

    Save it and point your editor at it, e.g. a first line `#:schema ./recipe.schema.json` in a
    recipe (Even Better TOML / taplo)."""
    import json

    from recipes.config.json_schema import recipe_schema
    from recipes.plugins.registry import get_registry

    text = json.dumps(recipe_schema(get_registry()), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        if not output.parent.is_dir():
            raise RecipeError(f"--output {output}: the folder {output.parent} does not exist; create it first")
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise RecipeError(f"--output {output}: cannot write it ({exc.strerror}); give another path") from None
        _console().print(f"wrote {output}")


@main.group()
def data():
    """Look at what the stages will train on."""


@data.command()
@click.argument("recipe")
@click.option("--stage", "stage_name", help="Only this stage (default: every stage).")
@click.option("-n", "count", default=2, show_default=True, help="Examples to show, trained tokens highlighted.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead.")
@friendly
def inspect(recipe, stage_name, count, as_json):
    """Statistics and highlighted examples of each stage's data (tokenized as a run would)."""
    import json

    from recipes.config.load import load_recipe
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry
    from recipes.config.schema import did_you_mean

    registry = get_registry()
    plan = make_plan(load_recipe(recipe, registry), registry)
    stages = plan.stages
    if stage_name is not None:
        stages = [s for s in plan.stages if s.name == stage_name]
        if not stages:
            raise RecipeError(f"--stage {stage_name}: no such stage; "
                              f"{did_you_mean(stage_name, [s.name for s in plan.stages])}")
    from transformers import AutoTokenizer

    from recipes.data.inspect import inspect_stage, print_inspection
    from recipes.planning.resolve import resolve_model

    path = resolve_model(plan.model_path, plan.revision, None, plan.recipe_path)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=plan.trust_remote_code)
    reports = [inspect_stage(stage, tokenizer, count) for stage in stages]
    if as_json:
        click.echo(json.dumps({"recipe": str(plan.recipe_path), "stages": reports}, indent=2, ensure_ascii=False))
        return
    console = _console()
    for report in reports:
        print_inspection(report, console)


@main.command(name="list")
def list_recipes():
    """List the bundled recipes."""
    import tomllib

    from recipes.family import family

    console = _console()
    bundled = family().bundled_recipes()
    width = max(map(len, bundled), default=0)
    for name, path in bundled.items():
        description = tomllib.loads(path.read_text(encoding="utf-8")).get("description", "")
        console.print(f"[bold]{name:<{width}}[/]  {description}")


@main.command()
@click.argument("name")
@click.argument("destination", type=click.Path(path_type=Path))
@friendly
def cp(name, destination):
    """Copy the bundled recipe NAME to DESTINATION, to edit."""
    from recipes.config.schema import did_you_mean
    from recipes.family import family

    bundled = family().bundled_recipes()
    stem = name[:-5] if name.endswith(".toml") else name
    if stem not in bundled:
        raise RecipeError(f"{name}: no bundled recipe of that name; {did_you_mean(stem, sorted(bundled))}")
    target = destination / f"{stem}.toml" if destination.is_dir() else destination
    if target.exists():
        raise RecipeError(f"{target}: already exists; give another path or remove it first")
    if not target.parent.is_dir():
        raise RecipeError(f"{target}: the folder {target.parent} does not exist; create it first or give another path")
    try:
        shutil.copyfile(bundled[stem], target)
    except OSError as exc:
        raise RecipeError(f"{target}: cannot write it ({exc.strerror}); give another path") from None
    _console().print(f"copied {stem} to {target}")


@main.command()
@friendly
def plugins():
    """List the loaded plugins, their versions, the hooks each implements and what it provides."""
    from recipes.plugins.registry import get_registry

    registry = get_registry()
    console = _console()
    descriptions = {**{f"format:{k}": v.description for k, v in registry.formats.items()},
                    **{f"backend:{k}": v.description for k, v in registry.backends.items()},
                    **{f"callback:{k}": v.description for k, v in registry.callbacks.items()},
                    **{f"loss:{k}": v.description for k, v in registry.losses.items()}}
    for name, info in registry.info.items():
        console.print(f"[bold]{name}[/] {info.version} ({info.source})")
        console.print(f"  hooks: {', '.join(registry.hooks_of(name)) or 'none'}")
        for provided in registry.provided_by(name):
            console.print(f"  {provided}: {descriptions.get(provided, '')}")
