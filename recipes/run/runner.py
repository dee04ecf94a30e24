"""Running a plan: every stage in order, each starting from what the one before published, keeping
what earlier runs finished (see recipes.run.manifest and recipes.run.fingerprint)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from recipes.config.schema import MODEL_REF
from recipes.errors import RecipeError
from recipes.planning.plan import Plan
from recipes.hashing import digest
from recipes.run.fingerprint import model_fingerprint, stage_parts, why_changed
from recipes.run.identity import claim, recipe_identity
from recipes.run.lock import run_folder_lock
from recipes.run.manifest import Manifest, inside
from recipes.run.progress import ManifestProgress
from recipes.run.publish import checksums, matches, publishing
from recipes.training import distributed

log = logging.getLogger("recipes")
LOGGERS = ("recipes", "transformers", "peft", "bitsandbytes", "torchao", "py.warnings")  # to run.log


def run_plan(plan: Plan, console, registry=None, restart: tuple[str, ...] = (), force: bool = False) -> list:
    """Run the plan's stages in order. A stage finished earlier with the same fingerprint is skipped;
    an interrupted one resumes from its last complete checkpoint; one whose inputs changed (or that
    ``restart`` names) runs afresh, and so do the stages after it. A run folder that holds another
    recipe's run is refused unless ``force`` (recipes.run.identity)."""
    if registry is None:
        from recipes.plugins.registry import get_registry

        registry = get_registry()
    with run_folder_lock(plan.run_dir, take=distributed.is_main()):
        if distributed.is_main():
            claim(plan, force)
        if not distributed.launched() and _all_done(plan, console, registry, restart):
            return []  # decided without importing torch: nothing to train
        return _run_locked(plan, console, registry, restart)


def _all_done(plan: Plan, console, registry, restart: tuple[str, ...]) -> bool:
    """Whether every stage is done with the same inputs (then say so, stage by stage)."""
    if restart or not (plan.run_dir / "manifest.json").is_file():
        return False
    plan_run = PlanRun(plan, console, registry, restart)
    if not all(plan_run.decision(stage)[0] == "skip" for stage in plan.stages):
        return False
    from recipes.run.samples import samples_pending

    if samples_pending(plan, plan_run.model_path):  # answering them needs the models: the full path
        return False
    console.print(f"[bold]recipes[/] run [cyan]{plan.name}[/] ({plan.recipe_path}) -> {plan.run_dir}")
    for stage in plan.stages:
        console.rule(f"stage {stage.index + 1}/{len(plan.stages)}: {stage.name} ({stage.kind})")
        plan_run.say(f"done earlier with the same inputs (fingerprint {plan_run.own[stage.name][:12]}): skipped")
        plan_run.say(f"merged model: {stage.merged_dir}")
        plan_run.say_stale_benchmarks(stage)
    console.rule("done")
    console.print(f"Run folder: {plan.run_dir.resolve()}")
    console.print(f"Final model: {plan.stages[-1].merged_dir.resolve()}")
    return True


def _run_locked(plan: Plan, console, registry, restart: tuple[str, ...]) -> list:
    _quiet_libraries()
    import torch

    distributed.init("cuda" if torch.cuda.is_available() else "cpu", plan.distributed.timeout_minutes)  # issue 18
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    if distributed.is_main():
        _record_start(plan)
    handler = _setup_logging(plan.run_dir) if distributed.is_main() else _silence()
    from recipes.training.interrupts import graceful_interrupts  # the training stack: after logging is set up

    try:
        console.print(f"[bold]recipes[/] run [cyan]{plan.name}[/] ({plan.recipe_path}) -> {plan.run_dir}")
        log.info("run %s from %s", plan.name, plan.recipe_path)
        with graceful_interrupts(console):
            plan_run = PlanRun(plan, console, registry, restart)
            results = plan_run.run()
        distributed.barrier()
        if distributed.is_main():  # the starting model's and every stage's answers to the recipe's samples
            from recipes.run.samples import run_samples

            run_samples(plan, plan_run.model_path, plan_run.manifest, plan_run.say)
        console.rule("done")
        console.print(f"Run folder: {plan.run_dir.resolve()}")
        console.print(f"Final model: {plan.stages[-1].merged_dir.resolve()}")
        return results
    finally:
        logging.captureWarnings(False)
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(handler)
        handler.close()


class PlanRun:
    """The stages of one plan, in order, against the run folder's manifest."""

    def __init__(self, plan: Plan, console, registry, restart: tuple[str, ...]):
        from recipes.planning.resolve import resolve_model

        self.plan, self.console, self.registry, self.restart = plan, console, registry, restart
        self.main = distributed.is_main()
        self.manifest = Manifest.load(plan.run_dir)
        self.manifest.data.setdefault("recipe", recipe_identity(plan))  # written with the first stage's entry
        self.model_path = resolve_model(plan.model_path, plan.revision, console, plan.recipe_path)
        # what each stage's children start from: its fingerprint and, once published, its outputs' digests
        self.fingerprints = {MODEL_REF: model_fingerprint(self.model_path, plan.revision)}
        self.own: dict[str, str] = {}  # each stage's own fingerprint
        self.rerun_from: str | None = None  # a stage trained again: the ones after it must follow

    def say(self, message: str) -> None:
        self.console.print(f"  {message}", highlight=False)
        log.info(message)

    def say_stale_benchmarks(self, stage) -> None:
        from recipes.benchmarks.evaluate import stale_note

        note = stale_note(self.plan, stage)
        if note:
            self.say(note)

    def run(self) -> list:
        results = []
        for stage in self.plan.stages:
            distributed.barrier()  # the main process has written the manifest and published
            if not self.main:
                self.manifest = Manifest.load(self.plan.run_dir)
            result = self.run_stage(stage)
            if result is not None:
                results.append(result)
        return results

    def decision(self, stage) -> tuple[str, str | None, Path | None, dict]:
        """decide() for one stage (stages in order); records its fingerprints. No torch."""
        tokenizer_folder = stage_base(self.plan, stage, self.model_path)[0]  # where its tokenizer comes from
        parts = stage_parts(self.plan, stage, self.fingerprints[stage.base], self.registry, tokenizer_folder)
        fingerprint = self.own[stage.name] = digest(parts)
        self.fingerprints[stage.name] = published_identity(fingerprint, self.manifest.stage(stage.name))
        action, why, checkpoint = decide(self.plan, stage, self.manifest.stage(stage.name), fingerprint, parts,
                                         forced=stage.name in self.restart, after=self.rerun_from)
        return action, why, checkpoint, parts

    def run_stage(self, stage):
        """Skip, resume or train one stage; the result when it trained."""
        plan = self.plan
        self.console.rule(f"stage {stage.index + 1}/{len(plan.stages)}: {stage.name} ({stage.kind})")
        action, why, checkpoint, parts = self.decision(stage)
        fingerprint = self.own[stage.name]
        if action == "skip":
            if self.main:
                shutil.rmtree(stage.checkpoint_dir, ignore_errors=True)  # left by a crash after publishing
            self.say(f"done earlier with the same inputs (fingerprint {fingerprint[:12]}): skipped")
            self.say(f"merged model: {stage.merged_dir}")
            self.say_stale_benchmarks(stage)
            return None
        self.rerun_from = self.rerun_from or stage.name
        if self.main:
            self.invalidate_after(stage)
        if action == "fresh":
            if why:
                self.say(f"training afresh: {why}")
            if self.main:
                shutil.rmtree(stage.checkpoint_dir, ignore_errors=True)
            self.manifest.reset(stage.name, status="running", fingerprint=fingerprint, parts=parts,
                                started=time.time())
        try:
            result = self.train_stage(stage, checkpoint)
        except BaseException as exc:
            self.stopped(stage, exc)
            raise
        self.fingerprints[stage.name] = published_identity(fingerprint, self.manifest.stage(stage.name))
        return result

    def invalidate_after(self, stage) -> None:
        """The stages after one that trains again start from what it will publish: their earlier
        results are stale, even if this run stops before reaching them."""
        for later in self.plan.stages[stage.index + 1:]:
            if self.manifest.stage(later.name) is not None:
                self.manifest.reset(later.name, status="stale",
                                    why=f"{stage.name!r} before it was trained again")

    def stopped(self, stage, exc: BaseException) -> None:
        """A stage that failed or was interrupted is not left ``running`` in the manifest."""
        from recipes.errors import Interrupted

        entry = self.manifest.stage(stage.name) or {}
        if not self.main or entry.get("status") != "running":  # "trained": its final checkpoint resumes
            return
        interrupted = isinstance(exc, (Interrupted, KeyboardInterrupt))
        self.manifest.update(stage.name, status="interrupted" if interrupted else "failed",
                             error=str(exc) or type(exc).__name__)

    def train_stage(self, stage, checkpoint: Path | None):
        from recipes.training.memory_peak import release_memory
        from recipes.training.stage import StageRun

        base_path, adapters = stage_base(self.plan, stage, self.model_path)
        for needed in [Path(base_path) / "config.json", *(a / "adapter_config.json" for a in adapters)]:
            if not needed.is_file():
                raise RecipeError(f"stage {stage.name!r} starts from {stage.base!r}, but {needed} is missing")
        self.say(f"base: {stage.base} ({base_path}" + "".join(f" + {a}" for a in adapters) + ")")
        started = time.monotonic()
        progress = ManifestProgress(self.manifest, stage.name, self.plan.run_dir, resuming=checkpoint is not None)
        stage_run = StageRun(self.plan, stage, base_path, self.say, self.console, progress, checkpoint, adapters)
        try:
            result = stage_run.run()
            self.publish(stage, stage_run, result, progress, started)
        finally:  # the next stage (or the samples) starts without this one's model, optimizer and trainer
            stage_run.close()
            device = stage_run.device
            del stage_run
            release_memory(device)
        loss = (f"loss {result.first_loss:.4f} -> {result.final_loss:.4f}"
                if result.first_loss is not None else "no loss logged")
        self.say(f"done in {result.wall_seconds:.1f} s (training {result.train_seconds:.1f} s): {result.steps} steps, "
                 f"{loss}")
        self.say(f"adapter: {result.adapter_dir}")
        self.say(f"merged model: {result.merged_dir}")
        return result

    def publish(self, stage, stage_run, result, progress: ManifestProgress, started: float) -> None:
        """Adapter and merged model together or not at all (the main process; the others wait at the
        next barrier), then stage.json and the manifest's record of the outputs. The stage's wall time
        (since ``started``, monotonic) ends when its outputs are in place."""
        from dataclasses import asdict

        final = progress.trained()
        # every process's time, as the tokens count from the stage's first step (a resumed stage)
        result.train_seconds, result.wall_seconds = progress.cumulative(result.train_seconds, 0.0)
        if not self.main:
            result.wall_seconds = progress.cumulative(0.0, time.monotonic() - started)[1]
            return
        keep = f"; the final checkpoint {final} is intact" if final else ""
        with publishing(stage.adapter_dir, stage.merged_dir, keep_note=keep) as (adapter_side, merged_side):
            stage_run.publish(adapter_side, merged_side, result)
        result.wall_seconds = progress.cumulative(0.0, time.monotonic() - started)[1]  # the "done in" figure
        (stage.folder / "stage.json").write_text(json.dumps(asdict(result), indent=2, ensure_ascii=False))
        outputs = {name: {"path": str(folder.relative_to(self.plan.run_dir)), "files": checksums(folder)}
                   for name, folder in (("adapter", stage.adapter_dir), ("merged", stage.merged_dir))}
        self.manifest.update(stage.name, status="done", outputs=outputs, result=asdict(result), finished=time.time())
        shutil.rmtree(stage.checkpoint_dir, ignore_errors=True)  # the published adapter is the result now


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
    if entry.get("status") == "stale":
        return "fresh", entry.get("why") or "the stage before it was trained again", None
    if entry.get("fingerprint") != fingerprint:
        return "fresh", why_changed(entry.get("parts", {}), parts), None
    if entry.get("status") == "done":
        outputs = entry.get("outputs", {})
        if outputs and all(matches(inside(plan.run_dir, o["path"]), o["files"]) for o in outputs.values()):
            return "skip", None, None
        return "fresh", "its published outputs are missing or changed on disk", None
    checkpoint = entry.get("checkpoint")
    if checkpoint and (inside(plan.run_dir, checkpoint) / "trainer_state.json").is_file():
        return "resume", None, inside(plan.run_dir, checkpoint)
    newest = _newest_complete(stage.checkpoint_dir)  # killed between rotating and recording a checkpoint
    if checkpoint and newest is not None:
        return "resume", None, newest
    return "fresh", "it stopped before its first checkpoint", None


def _newest_complete(folder: Path) -> Path | None:
    """The newest checkpoint of a stage that is complete (trainer_state.json is written last)."""
    found = [(int(p.name.rsplit("-", 1)[1]), p) for p in folder.glob("checkpoint-*")
             if p.name.rsplit("-", 1)[1].isdigit() and (p / "trainer_state.json").is_file()]
    return max(found)[1] if found else None


def published_identity(fingerprint: str, entry: dict | None) -> str:
    """What a child stage starts from: the stage's fingerprint and the digests of what it published
    (a stage trained again publishes other weights: its children follow)."""
    outputs = (entry or {}).get("outputs") if (entry or {}).get("status") == "done" else None
    if not outputs:
        return fingerprint
    return digest({"fingerprint": fingerprint, "published": {
        name: {f: r["sha256"] for f, r in o["files"].items()} for name, o in sorted(outputs.items())}})


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_warning()
    hf_logging.disable_default_handler()  # warnings go to run.log, not over the progress bar


def _record_start(plan: Plan) -> None:
    (plan.run_dir / "recipe.json").write_text(plan.recipe_json, encoding="utf-8")
    with open(plan.run_dir / "metrics.jsonl", "a", encoding="utf-8") as metrics:  # marks where a run starts
        metrics.write(json.dumps({"event": "run_start", "recipe": str(plan.recipe_path), "time": time.time()}) + "\n")


def _setup_logging(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.captureWarnings(True)  # library deprecation warnings go to run.log too
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return handler


def _silence() -> logging.Handler:
    """The other processes say nothing: the main one speaks and logs for the run."""
    handler = logging.NullHandler()
    logging.captureWarnings(True)
    for name in LOGGERS:
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).propagate = False
    return handler
