"""Running a plan: every stage in order, each starting from what the one before published, keeping
what earlier runs finished (see recipes.run.manifest and recipes.run.fingerprint)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from recipes.training import distributed
from recipes.errors import RecipeError
from recipes.run.fingerprint import digest, model_fingerprint, stage_parts, why_changed
from recipes.run.manifest import Manifest
from recipes.planning.plan import Plan
from recipes.run.publish import matches
from recipes.config.schema import MODEL_REF

log = logging.getLogger("recipes")


def resolve_model(path: str, revision: str | None, console, recipe_path=None) -> str:
    """The folder of the recipe's model: a bundled model (built on first use), a local folder, or a
    hub id's snapshot in the local HF cache. Nothing is downloaded implicitly: a 7B checkpoint is a
    download the user starts on purpose."""
    if path.startswith("bundled:"):
        from qwen_recipes.tiny import tiny_qwen2_path

        return str(tiny_qwen2_path(console))
    if Path(path).is_dir():
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return snapshot_download(path, revision=revision, local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError, OSError) as exc:
        raise RecipeError(f"{recipe_path}: model.path: {path!r} is neither a local model folder nor in the local HF cache "
                          f"({type(exc).__name__}); download it first (`hf download {path}`) or give a local "
                          "folder") from None


def _setup_logging(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.captureWarnings(True)  # library deprecation warnings go to run.log too
    for name in ("recipes", "transformers", "peft", "bitsandbytes", "py.warnings"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return handler


def _silence() -> logging.Handler:
    """The other processes say nothing: the main one speaks and logs for the run."""
    handler = logging.NullHandler()
    logging.captureWarnings(True)
    for name in ("recipes", "transformers", "peft", "bitsandbytes", "py.warnings"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).propagate = False
    return handler


def run_plan(plan: Plan, console, registry=None, restart: tuple[str, ...] = ()) -> list:
    """Run the plan's stages in order. A stage finished earlier with the same fingerprint is skipped;
    an interrupted one resumes from its last complete checkpoint; one whose inputs changed (or that
    ``restart`` names) runs afresh, and so do the stages after it."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_warning()
    hf_logging.disable_default_handler()  # warnings go to run.log, not over the progress bar
    if registry is None:
        from recipes.plugins.registry import get_registry

        registry = get_registry()
    import torch

    distributed.init("cuda" if torch.cuda.is_available() else "cpu")
    main = distributed.is_main()
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.load(plan.run_dir)
    if main:
        (plan.run_dir / "recipe.json").write_text(plan.recipe_json, encoding="utf-8")
        with open(plan.run_dir / "metrics.jsonl", "a", encoding="utf-8") as metrics:  # marks where a run starts
            metrics.write(json.dumps({"event": "run_start", "recipe": str(plan.recipe_path), "time": time.time()}) + "\n")
    handler = _setup_logging(plan.run_dir) if main else _silence()
    from recipes.training.guards import graceful_interrupts  # imports the training stack: after logging is set up
    from recipes.training.stage import run_stage

    def say(message: str) -> None:
        console.print(f"  {message}", highlight=False)
        log.info(message)

    results = []
    try:
        console.print(f"[bold]recipes[/] run [cyan]{plan.name}[/] ({plan.recipe_path}) -> {plan.run_dir}")
        log.info("run %s from %s", plan.name, plan.recipe_path)
        model_path = resolve_model(plan.model_path, plan.revision, console, plan.recipe_path)
        fingerprints = {MODEL_REF: model_fingerprint(model_path, plan.revision)}
        rerun_from: str | None = None  # a stage trained again: the ones after it must follow
        with graceful_interrupts(console):
            for stage in plan.stages:
                distributed.barrier()  # the main process has written the manifest and published
                if not main:
                    manifest = Manifest.load(plan.run_dir)
                parts = stage_parts(plan, stage, fingerprints[stage.base], registry)
                fingerprint = fingerprints[stage.name] = digest(parts)
                console.rule(f"stage {stage.index + 1}/{len(plan.stages)}: {stage.name} ({stage.kind})")
                action, why, checkpoint = decide(plan, stage, manifest.stage(stage.name), fingerprint, parts,
                                                 forced=stage.name in restart, after=rerun_from)
                if action == "skip":
                    if main:
                        shutil.rmtree(stage.checkpoint_dir, ignore_errors=True)  # left by a crash after publishing
                    say(f"done earlier with the same inputs (fingerprint {fingerprint[:12]}): skipped")
                    say(f"merged model: {stage.merged_dir}")
                    continue
                rerun_from = rerun_from or stage.name
                if action == "fresh":
                    if why:
                        say(f"training afresh: {why}")
                    if main:
                        shutil.rmtree(stage.checkpoint_dir, ignore_errors=True)
                    manifest.reset(stage.name, status="running", fingerprint=fingerprint, parts=parts,
                                   started=time.time())
                base_path, adapters = stage_base(plan, stage, model_path)
                for needed in [Path(base_path) / "config.json", *(a / "adapter_config.json" for a in adapters)]:
                    if not needed.is_file():
                        raise RecipeError(f"stage {stage.name!r} starts from {stage.base!r}, but {needed} is missing")
                say(f"base: {stage.base} ({base_path}" + "".join(f" + {a}" for a in adapters) + ")")
                started = time.monotonic()
                result = run_stage(plan, stage, base_path, say, console, manifest, checkpoint, adapters)
                loss = (f"loss {result.first_loss:.4f} -> {result.final_loss:.4f}"
                        if result.first_loss is not None else "no loss logged")
                say(f"done in {time.monotonic() - started:.1f} s: {result.steps} steps, {loss}")
                say(f"adapter: {result.adapter_dir}")
                say(f"merged model: {result.merged_dir}")
                results.append(result)
        distributed.barrier()
        if main:  # issue 19: the starting model's and every stage's answers to the recipe's samples
            from recipes.outputs.samples import run_samples

            run_samples(plan, model_path, manifest, say)
        console.rule("done")
        if main:
            from recipes.outputs.report import write_report

            write_report(plan.run_dir, console)
        console.print(f"Run folder: {plan.run_dir.resolve()}")
        console.print(f"Final model: {plan.stages[-1].merged_dir.resolve()}")
        return results
    finally:
        logging.captureWarnings(False)
        for name in ("recipes", "transformers", "peft", "bitsandbytes", "py.warnings"):
            logging.getLogger(name).removeHandler(handler)
        handler.close()


def stage_base(plan: Plan, stage, model_path: str) -> tuple[str, list[Path]]:
    """(the model folder a stage loads, the earlier adapters applied on it). With ``merge`` that is the
    earlier stage's merged model alone; with ``continue`` and ``stack``, that stage's own base and
    adapters, then its adapter."""
    if stage.base == MODEL_REF:
        return model_path, []
    previous = plan.stage(stage.base)
    if stage.settings.chaining == "merge":
        return str(previous.merged_dir), []
    root, adapters = stage_base(plan, previous, model_path)
    return root, adapters + [previous.adapter_dir]


def decide(plan: Plan, stage, entry: dict | None, fingerprint: str, parts: dict, forced: bool,
           after: str | None) -> tuple[str, str | None, Path | None]:
    """("skip" | "resume" | "fresh", why, checkpoint to resume from)."""
    if forced:
        return "fresh", "--restart names it", None
    if entry is None:
        return "fresh", None, None
    if after is not None:
        return "fresh", f"{after!r} before it was trained again", None
    if entry.get("fingerprint") != fingerprint:
        return "fresh", why_changed(entry.get("parts", {}), parts), None
    if entry.get("status") == "done":
        outputs = entry.get("outputs", {})
        if outputs and all(matches(plan.run_dir / o["path"], o["files"]) for o in outputs.values()):
            return "skip", None, None
        return "fresh", "its published outputs are missing or changed on disk", None
    checkpoint = entry.get("checkpoint")
    if checkpoint and (plan.run_dir / checkpoint / "trainer_state.json").is_file():
        return "resume", None, plan.run_dir / checkpoint
    return "fresh", "it stopped before its first checkpoint", None
