"""One stage, as a class that reads top to bottom in the order it runs (torchtune's recipe classes are
the model): prepare the data, load the model, attach the adapters, build the trainer, evaluate, train,
evaluate again; the runner then has it publish its adapter and merged model.

The stage knows nothing of the manifest: it reports checkpoints and evaluations to a ``StageProgress``
the runner gives it. Heavy libraries are imported here, not at the top of the CLI.
"""

from __future__ import annotations

import errno
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from recipes.errors import Interrupted, TrainingError
from recipes.training import distributed, own_kind
from recipes.training.evaluate import describe_eval, evaluate, headline_eval, own_sets
from recipes.training.interrupts import STOP
from recipes.training.memory_peak import StagePeak
from recipes.training.precision import device, pick_precision, torch_dtype
from recipes.training.restore import restore_finished
from recipes.training.stage_result import StageProgress, StageResult


class StageRun:
    def __init__(self, plan, stage, base_path: str, say, console, progress: StageProgress,
                 resume_from: Path | None = None, adapters: list[Path] = ()):
        self.plan, self.stage, self.base_path, self.say, self.console = plan, stage, base_path, say, console
        self.progress, self.resume_from, self.adapters = progress, resume_from, list(adapters)
        self.settings = stage.settings
        self.precision, why = pick_precision(self.settings.precision)
        self.dtype, self.device = torch_dtype(self.precision), device()
        say(f"precision: {why}")
        self.load_kwargs = dict(trust_remote_code=plan.trust_remote_code)
        if stage.base == "model" and plan.revision:
            self.load_kwargs["revision"] = plan.revision

    def run(self) -> StageResult:
        """Every step of the stage but publishing, in order."""
        self.peak = StagePeak(self.device)  # this stage's own peak memory, from here
        self.prepare_data()
        self.load_model()
        self.attach_adapters()
        self.build_trainer()
        self.before = self.evaluate_before()
        self.benchmarks_start = self.score_benchmarks(start=True)
        self.train()
        self.after = self.evaluate_after()
        self.benchmarks_after = self.score_benchmarks(start=False)
        return self.result()

    def prepare_data(self) -> None:
        """Tokenizer and data first: a data mistake surfaces before the model is loaded. The first
        process of each node prepares the token store; the others poll for its ready marker (no
        collective call that a timeout could end). A kind with its own training: its plugin's."""
        from transformers import AutoTokenizer

        from recipes.data.prepare import prepare

        self.tokenizer = AutoTokenizer.from_pretrained(self.base_path, **self.load_kwargs)
        if not self.stage.language_modelling:
            return own_kind.prepare_data(self)
        self.data = prepare(self.stage, self.tokenizer, self.say)  # one process per node prepares the store
        stats, s = self.data.stats, self.settings
        for note in stats.notes:
            self.say(note)
        self.say(f"data: {stats.records} records -> {stats.examples} sequences, {stats.tokens:,} tokens, "
                 f"{stats.label_tokens:,} with a label"
                 + (f"; {stats.truncated} truncated to {s.cutoff_len}" if stats.truncated else "")
                 + (f"; {stats.dropped} dropped" if stats.dropped else "")
                 + "".join(f"; {name}: {len(rows)} held for evaluation" for name, rows in self.data.evals.items()))
        if self.data.packing is not None:
            self.say(self.data.packing.describe())
        from recipes.data.inspect import mix_lines

        for line in mix_lines(self.data.mix):
            self.say(f"data: {line}")
        self.matrix_sets = self._matrix_sets()

    def _matrix_sets(self) -> dict:
        """The evaluation sets this stage evaluates after training, named STAGE/SET: every stage's
        (the plan's evaluation matrix; each prepared with its own stage's settings, from the store),
        or with ``eval_matrix = false`` its own."""
        from recipes.data.layout import examples_of
        from recipes.data.prepare import prepare

        sets = {}
        for other in (o for o in self.plan.stages if o.language_modelling):  # a kind's own sets: its evaluate
            if other is self.stage:
                evals = self.data.evals
            elif not self.plan.eval_matrix:
                continue
            else:
                template = self.tokenizer.chat_template  # an SFT stage's data may set the family's on it
                try:
                    evals = prepare(other, self.tokenizer, lambda m, o=other.name: self.say(f"eval matrix, {o} {m}")).evals
                finally:
                    self.tokenizer.chat_template = template
                evals = {name: examples_of(dataset) for name, dataset in evals.items()}  # unpacked: the same mean
            sets.update({f"{other.name}/{name}": dataset for name, dataset in evals.items()})
        return sets

    def load_model(self) -> None:
        """The base model through the quantization backend."""
        from transformers import set_seed

        from recipes.config.optimizers import device_note
        from recipes.training.model import load_model
        from recipes.training.precision import pick_attention

        set_seed(self.settings.seed)
        attention, why = pick_attention(self.settings.attn_implementation, self.device, self.precision)
        self.say(f"attention: {why}")
        note = device_note(self.settings.optim, self.device)
        if note:
            self.say(f"warning: {note}")
        d = self.plan.distributed
        sharded = d is not None and (d.strategy == "fsdp" or (d.strategy == "deepspeed" and (d.zero_stage or 2) == 3))
        self.model = load_model(self.base_path, self.stage.backend, self.stage.backend_options, self.dtype,
                                self.load_kwargs, self.device, self.settings.gradient_checkpointing, attention,
                                sharded=sharded)

    def attach_adapters(self) -> None:
        """LoRA on the model (and the earlier stages' adapters, as ``chaining`` says), with the chat
        tokens' rows where the starting model does not know them (``train_tokens``)."""
        from recipes.training import token_rows
        from recipes.training.model import attach_adapters, changes_base, lora_config, save_initial_adapter

        s = self.settings
        rows = token_rows.decide(s.train_tokens, self.stage.kind, self.model, self.tokenizer, self.base_path,
                                 chat=self.stage.kind_provider.chat)
        self.say(rows.describe())
        lora = lora_config(s, token_rows.lora_arguments(self.model, rows))
        self.model, self.frozen = attach_adapters(self.model, lora, self.adapters, s.chaining, self.stage, self.say)
        self.initial_adapter = None
        fresh = not (self.adapters and s.chaining == "continue")  # a continued adapter keeps its own init
        if fresh and changes_base(s):
            self.initial_adapter = self.stage.checkpoint_dir / "initial-adapter"
            save_initial_adapter(self.model, self.initial_adapter)
            self.say(f"init_lora_weights {s.init_lora_weights}: the base weights are rewritten; the adapter is "
                     "published converted to a plain LoRA (rank x 2) of the original base")
        token_rows.lean_forward(self.model)  # trained rows without a copy of the whole embedding
        self.trainable, self.total = self.model.get_nb_trainable_parameters()
        targets = "all-linear" if s.lora_target == "all" else ", ".join(s.lora_target)
        variant = "".join(f" {v}" for v, on in (("rsLoRA", s.use_rslora), ("DoRA", s.use_dora)) if on)
        self.say(f"model: {self.base_path} ({self.stage.backend.name} backend) + LoRA{variant} r={s.lora_rank} "
                 f"alpha={s.lora_alpha:g} on {targets}: {self.trainable:,} trainable of {self.total:,} parameters "
                 f"({100 * self.trainable / self.total:.3f}%)")

    def build_trainer(self) -> None:
        """The Trainer with the stage's loss, guards, collator and the plugins' callbacks."""
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        from recipes.data.layout import PackedDataset
        from recipes.data.tokenization import PadCollator
        from recipes.training.channels import Channels
        from recipes.plugins.hookspecs import StageContext
        from recipes.training.model import pad_id
        from recipes.training.trainer import StageGuard, StageTrainer, training_arguments

        plan, stage, s = self.plan, self.stage, self.settings
        args = training_arguments(stage, self.precision, self.device, plan.distributed,
                                  getattr(self.model, "_no_split_modules", None))
        context = StageContext(run_dir=plan.run_dir, stage_name=stage.name, stage_index=stage.index,
                               stage_count=len(plan.stages), console=self.console,
                               metrics_path=plan.run_dir / "metrics.jsonl")
        callbacks = [cb for cb in (plugin.build(context) for plugin in plan.callbacks) if cb is not None]
        if not stage.language_modelling:  # the Trainer its kind's plugin builds
            return own_kind.build_trainer(self, args, [*callbacks, StageGuard(self.progress.checkpoint_saved)])
        if self.data.packing is not None:
            from recipes.data.collate import packed_collator
            from recipes.data.packing import check_packable

            check_packable(self.model)
            collator = packed_collator(self.model, pad_id(self.tokenizer))  # flattened for flash attention only
        else:
            collator = PadCollator(pad_id(self.tokenizer))
        padded = PadCollator(pad_id(self.tokenizer))
        self.trainer = StageTrainer(
            model=self.model, args=args, train_dataset=self.data.train, eval_dataset=self.data.evals or None,
            data_collator=collator, processing_class=self.tokenizer,
            callbacks=[*callbacks, StageGuard(self.progress.checkpoint_saved)],
            lm_loss=stage.loss.build(self.model, stage.loss_options), skip_limit=s.skip_nonfinite_batches,
            loraplus_lr_ratio=s.loraplus_lr_ratio, embedding_learning_rate=s.embedding_learning_rate,
            eval_collator=lambda dataset: collator if isinstance(dataset, PackedDataset) else padded,
            channels=Channels([m["name"] for m in self.data.mix]) if len(self.data.mix) > 1 else None)
        for quiet in (PrinterCallback, ProgressCallback):
            self.trainer.remove_callback(quiet)
        processes = distributed.world_size()
        self.say(f"training: {len(self.data.train)} {'rows' if self.data.packing else 'sequences'}, effective "
                 f"batch {stage.effective_batch * processes} ({s.per_device_train_batch_size} x "
                 f"{s.gradient_accumulation_steps} accumulation" + (f" x {processes} processes" if processes > 1 else "")
                 + "), " + (f"{s.max_steps} steps" if s.max_steps else f"{s.num_train_epochs:g} epoch(s)")
                 + f", lr {s.learning_rate:g} {s.lr_scheduler_type}; a checkpoint every {s.save_steps} steps")

    def evaluate_before(self) -> dict | None:
        """The evaluation sets on the starting point, once (a resumed stage keeps the first figures):
        the first stage evaluates the whole matrix there (the starting model's row)."""
        start = self.stage.index == 0 and self.plan.eval_matrix
        own = self.data.evals if self.stage.language_modelling else {}
        sets = self.matrix_sets if start else {f"{self.stage.name}/{n}": d for n, d in own.items()}
        self.start_row = None
        if not sets and getattr(self, "kind_evaluate", None) is None:
            return None
        results = self.progress.eval_before()
        if results is None:
            results = own_kind.with_own_sets(self, self._evaluate(sets) if sets else None)
            if results is None:
                return None
            self.progress.evaluated_before(results)
            self.say(("eval on the starting model: " if start else "eval before: ") + describe_eval(results))
        self.start_row = results if start else None
        self.before_row = results
        return own_sets(results, self.stage.name)

    def train(self) -> None:
        """trainer.train(), resumed where a checkpoint says; failures become clear errors that keep
        the last good checkpoint, and Ctrl-C a checkpoint to resume from."""
        if self.resume_from is not None:
            self.say(f"resuming from {self.resume_from.name} (optimizer, scheduler, RNG state and data position)")
        started = time.monotonic()
        self.progress.training_started()  # the stage's time across processes counts from here
        if self.resume_from is None or not restore_finished(self.trainer, self.resume_from):
            self._train_guarded()
        self.seconds = time.monotonic() - started
        self._say_source_losses()
        if STOP.requested:
            state = self.trainer.state
            raise Interrupted(f"stage {self.stage.name!r} stopped at step {state.global_step} of {state.max_steps}; "
                              f"checkpoint saved ({self._shown(self.progress.last_checkpoint())}). Run the same command again "
                              "to resume from it")

    def _say_source_losses(self) -> None:
        channels = getattr(self.trainer, "channels", None)
        if channels is not None and channels.missing:
            self.say(f"note: the {self.settings.loss!r} loss gives no per-token losses, so no per-source training loss")
        from recipes.training.channels import PREFIX

        latest = {}  # each source's last logged value (a batch may hold no token of a source)
        for row in self.trainer.state.log_history:
            latest.update({k[len(PREFIX):]: v for k, v in row.items() if k.startswith(PREFIX)})
        self.source_losses = latest or None
        if self.source_losses:
            self.say("training loss per source (last logged): "
                     + ", ".join(f"{name} {value:.4f}" for name, value in self.source_losses.items()))

    def _train_guarded(self) -> None:
        from recipes.training.trainer import NonFiniteError

        name = self.stage.name
        try:
            self.trainer.train(resume_from_checkpoint=str(self.resume_from) if self.resume_from else None)
        except NonFiniteError as exc:
            good = self._last_good()
            self.progress.failed(str(exc))
            raise TrainingError(f"stage {name!r}: {exc}; {good}. Lower the learning_rate or check the data "
                                "(or set skip_nonfinite_batches)") from None
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            good = self._last_good()
            self.progress.failed("out of disk space")
            raise TrainingError(f"stage {name!r}: out of disk space while saving a checkpoint; {good}. "
                                "Free space and run the same command again to resume") from None

    def _last_good(self) -> str:
        """Remove checkpoints the run does not know as complete; say which one is kept."""
        recorded = self.progress.last_checkpoint()
        for folder in self.stage.checkpoint_dir.glob("checkpoint-*"):
            if recorded is None or folder != recorded:
                shutil.rmtree(folder, ignore_errors=True)
        return (f"the last good checkpoint is {self._shown(recorded)}" if recorded
                else "no checkpoint was saved before it")

    def _shown(self, checkpoint: Path | None) -> str | None:
        return str(checkpoint.relative_to(self.plan.run_dir)) if checkpoint else None

    def _evaluate(self, sets: dict) -> dict:
        """evaluate() over ``STAGE/SET`` sets, logged with this stage's own by their short names (as
        its ``eval_steps`` evaluations are: one series per set in metrics.jsonl, TensorBoard, MLflow)."""
        prefix = f"{self.stage.name}/"
        logged = {name[len(prefix):] if name.startswith(prefix) else name: name for name in sets}
        if len(logged) < len(sets):  # a short name equal to another stage's STAGE/SET: keep them whole
            logged = {name: name for name in sets}
        trainer = self.trainer if self.stage.language_modelling else own_kind.lm_trainer(self)
        results = evaluate(trainer, {short: sets[name] for short, name in logged.items()})
        return {logged[short]: value for short, value in results.items()}

    def evaluate_after(self) -> dict | None:
        """Every set of the matrix (or the stage's own) on the trained model."""
        self.after_row = own_kind.with_own_sets(self, self._evaluate(self.matrix_sets) if self.matrix_sets else None)
        if self.after_row:
            self.say("eval after:  " + describe_eval(self.after_row))
        return own_sets(self.after_row, self.stage.name)

    def score_benchmarks(self, start: bool) -> dict | None:
        """The recipe's multiple-choice benchmarks on the model as loaded: the starting model's row
        (the first stage, before training) or this stage's (recipes.benchmarks)."""
        from recipes.benchmarks.evaluate import stage_benchmarks

        return stage_benchmarks(self, start)

    def result(self) -> StageResult:
        losses = [row["loss"] for row in self.trainer.state.log_history if "loss" in row]
        data, stage = self.data, self.stage
        return StageResult(
            name=stage.name, kind=stage.kind, base=stage.base, precision=self.precision,
            steps=self.trainer.state.global_step, first_loss=losses[0] if losses else None,
            final_loss=losses[-1] if losses else None, train_seconds=round(self.seconds, 2),
            tokens_seen=int(getattr(self.trainer.state, "num_input_tokens_seen", 0) or 0),
            trainable_params=self.trainable, total_params=self.total, adapter_dir=str(stage.adapter_dir),
            merged_dir=str(stage.merged_dir),
            data=dict(data.stats) if not stage.language_modelling else {
                **asdict(data.stats), "cached": data.cached, "packed_rows": data.packing.rows if data.packing else None,
                "packing_efficiency": data.packing.efficiency if data.packing else None},
            eval_before=self.before, eval_after=self.after, peak_memory_bytes=self.peak.stop(),
            eval_matrix=own_kind.matrix_rows(self) if self.after_row else None,
            mix=getattr(data, "mix", None), source_losses=getattr(self, "source_losses", None),
            benchmarks={"start": self.benchmarks_start, "after": self.benchmarks_after}
            if self.benchmarks_start or self.benchmarks_after else None, **headline_eval(self.before, self.after))

    def publish(self, adapter_dir: Path, merged_dir: Path, result: StageResult | None = None) -> None:
        """Write the adapter (PEFT format) and the merged model (HF format, safetensors) into the two
        folders the runner's atomic publishing hands over. With a quantizing backend, ``result`` gets
        the merged model's evaluation (``eval_loss_merged``)."""
        from recipes.training.model import end_turns, merged_model, point_adapter_at, save_adapter, save_merged

        save_adapter(self.model, self.tokenizer, adapter_dir, getattr(self, "initial_adapter", None))
        if self.settings.chaining == "stack":  # the new adapter applies on the earlier stage's merged model
            point_adapter_at(adapter_dir, self.plan.stage(self.stage.base).merged_dir)
        merged = merged_model(self.model, self.stage.backend, self.base_path, self.dtype, self.load_kwargs,
                              [*self.frozen, adapter_dir], self.device)
        if self.stage.backend.quantizes and result is not None and self.stage.language_modelling:
            self.evaluate_merged(merged, result)
        if self.stage.kind_provider.chat:
            end_turns(merged, self.tokenizer)
        save_merged(merged, self.tokenizer, merged_dir)
        from recipes.training.token_rows import carry_source

        carry_source(self.base_path, merged_dir, self.stage.kind)  # a Qwen v1 base stays known as one

    def evaluate_merged(self, merged, result: StageResult) -> None:
        """The held-out set (else the stage's first evaluation set) once on the merged model, which is
        what the stage publishes and the next stage starts from: the adapter trained against
        quantized weights, merged into the unquantized base. Its difference from the evaluation on
        the quantized weights is what merging changed."""
        after = own_sets(self.after_row, self.stage.name) if getattr(self, "after_row", None) else None
        if not after:
            return
        name = "val" if "val" in after else next(iter(after))
        if distributed.world_size() > 1:  # publishing runs on the main process alone: no collective evaluation
            self.say("merged model: not evaluated (publishing runs on one process of several)")
            return
        trainer, trained = self.trainer, self.trainer.model
        trainer.model = merged
        try:
            loss, _ = trainer.token_loss(trainer.get_eval_dataloader(self.data.evals[name]))
        finally:
            trainer.model = trained
        result.eval_loss_merged = loss
        result.eval_loss_merged_change = loss - after[name]["loss"]
        self.say(f"merged model ({self.stage.backend.name} adapter merged into the {self.precision} base, as "
                 f"published): {name} loss {loss:.4f}, {result.eval_loss_merged_change:+.4f} from the quantized "
                 f"model's {after[name]['loss']:.4f}")

    def close(self) -> None:
        """Let go of the model, its optimizer and the trainer once the stage is published (or failed),
        so that the next stage starts on an empty device: the runner drops the StageRun after this and
        empties the allocator's cache (recipes.training.memory_peak.release_memory). Two reference
        cycles would otherwise keep them alive until Python's cyclic collector happens to run:
        accelerate's mixed-precision wrapper stores ``model.forward`` as a method bound to the model,
        on the model (undone here), and the trainer's guard callback asks the trainer for its scaler
        (held weakly, recipes.training.trainer). The accelerator's own lists of prepared objects go
        with the trainer, which alone holds it."""
        for trainer in (self.__dict__.pop("trainer", None), self.__dict__.pop("_lm_eval", None)):  # own_kind's too
            if trainer is None:
                continue
            for model in {id(m): m for m in (trainer.model, trainer.model_wrapped, self.__dict__.get("model"))
                          if m is not None}.values():
                for patched in ("forward", "_original_forward"):
                    model.__dict__.pop(patched, None)
            trainer.model = trainer.model_wrapped = trainer.optimizer = trainer.lr_scheduler = None
        for held in ("model", "data", "matrix_sets", "frozen"):
            self.__dict__.pop(held, None)
