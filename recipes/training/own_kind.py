"""A stage whose kind brings its own training (``StageKind.prepare`` and ``build``, e.g. the dpo kind
of recipes-trl): the steps of ``StageRun`` that hand over to the kind's plugin. Everything else (the
model, the adapters, checkpoints and resume, publishing) stays the host's."""

from __future__ import annotations


def prepare_data(run) -> None:
    """The kind's own data preparation, before the model is loaded (``run.data``; its lines go to the run
    log), and the matrix's language-modelling sets (``run.matrix_sets``)."""
    from recipes.data.prepare import kind_data

    run.data = run.stage.kind_provider.prepare(kind_data(run.stage, run.tokenizer, run.say))
    for line in getattr(run.data, "lines", ()):
        run.say(f"data: {line}")
    run.matrix_sets = run._matrix_sets()


def build_trainer(run, args, callbacks: list) -> None:
    """The Trainer the kind builds (``run.trainer``) and its evaluation (``run.kind_evaluate``), with the
    stage's model, arguments and callbacks."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from recipes.plugins.hookspecs import KindTraining
    from recipes.training import distributed

    stage, s = run.stage, run.settings
    continued = run.plan.stage(stage.base).adapter_dir if s.chaining == "continue" and stage.base != "model" else None
    chunk = getattr(stage.loss_options, "chunk_size", None) if s.loss == "chunked" else None
    built = stage.kind_provider.build(KindTraining(
        stage.name, s, stage.kind_options, run.tokenizer, run.model, s.chaining, continued, args, callbacks,
        chunk, run.say), run.data)
    for quiet in (PrinterCallback, ProgressCallback):
        built.trainer.remove_callback(quiet)
    run.say(f"training: {stage.kind}, effective batch {stage.effective_batch * distributed.world_size()}, "
            + (f"{s.max_steps} steps" if s.max_steps else f"{s.num_train_epochs:g} epoch(s)")
            + f", lr {s.learning_rate:g} {s.lr_scheduler_type}; a checkpoint every {s.save_steps} steps")
    run.trainer, run.kind_evaluate = built.trainer, built.evaluate


def lm_trainer(run):
    """An evaluation-only StageTrainer on the stage's model, for the language-modelling sets of the
    matrix (the earlier stages' held-out text: does what they taught hold after this stage?)."""
    if getattr(run, "_lm_eval", None) is None:
        from recipes.data.tokenization import PadCollator
        from recipes.training.model import pad_id
        from recipes.training.trainer import StageTrainer, training_arguments

        args = training_arguments(run.stage, run.precision, run.device, run.plan.distributed,
                                  getattr(run.model, "_no_split_modules", None))
        run._lm_eval = StageTrainer(model=run.model, args=args, data_collator=PadCollator(pad_id(run.tokenizer)),
                                    processing_class=run.tokenizer,
                                    lm_loss=run.stage.loss.build(run.model, run.stage.loss_options))
    return run._lm_eval


def with_own_sets(run, results: dict | None) -> dict | None:
    """``results`` with the stage kind's own evaluation (``STAGE/SET``) added, when it has one."""
    if getattr(run, "kind_evaluate", None) is None:
        return results
    own = {f"{run.stage.name}/{name}": value for name, value in (run.kind_evaluate() or {}).items()}
    return {**(results or {}), **own} or None


def matrix_rows(run) -> dict:
    """The stage's rows of the evaluation matrix; a kind's own sets evaluated before training go in the
    row of the model it started from ("before")."""
    row = {"start": run.start_row, "after": run.after_row}
    if getattr(run, "kind_evaluate", None) is not None and not run.start_row:
        prefix = f"{run.stage.name}/"
        row["before"] = {k: v for k, v in (getattr(run, "before_row", None) or {}).items() if k.startswith(prefix)}
    return row
