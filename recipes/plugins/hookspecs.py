"""The plugin contract.

A plugin is a module or object with functions marked ``@hookimpl`` whose names match the hooks
below. Third-party plugins are found through the entry-point group ``recipes.plugins.registry``::

    [project.entry-points."recipes.plugins"]
    my_format = "my_package.plugin"

Each hook returns a list of *provider objects* (``DataFormat``, ``QuantizationBackend``,
``CallbackPlugin``, ``LossFunction``, ``Exporter``, ``BenchmarkScorer``, ``StageKind``, ``DocumentFilter``): the host collects them from every plugin (pluggy's collect-all call), indexes
them by name, and refuses two providers of the same name. Collect-all rather than
``firstresult`` because validation needs the whole set of names: to suggest "did you mean", to list
them in ``recipes plugins`` and to put each provider's options model into ``recipes schema``.

The hooks are called when the registry is first built, before any recipe is read. They must be
cheap and must not import torch or transformers: ``recipes validate`` calls them. Import heavy
libraries inside the provider's functions, which run only when a stage runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import pluggy
from pydantic import BaseModel

# the stage kinds' provider classes and the empty options model live in modules of their own (this
# module would be too long to read); they are part of the contract and named from here
from recipes.plugins.filters import CORPUS, DOCUMENT, DocumentFilter, FilterContext  # noqa: F401 (re-exported)
from recipes.plugins.no_options import NoOptions
from recipes.plugins.stage_kinds import KindData, KindTrainer, KindTraining, StageKind  # noqa: F401 (re-exported)

PROJECT = "recipes"
# The version of the plugin contract and of recipes.api; a plugin sets REQUIRES_RECIPES_API to the one it needs
API_VERSION = 1
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True)
class DataFormat:
    """A way to read data files into records.

    ``yields`` says what the records are:

    - ``"documents"``: ``{"text": str}`` each, for ``pretrain`` stages;
    - a stage kind's own records (``StageKind.records``), for example ``"preferences"`` for the
      ``dpo`` kind of the recipes-trl plugin: their shape is that kind's contract;
    - ``"conversations"``: ``{"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str},
      ...], "tools": [...]}`` each (``tools`` optional), for ``sft`` stages. An assistant message may
      carry ``"tool_calls": [{"type": "function", "function": {"name", "arguments": {...}}}]``. Any
      message may carry ``"train": bool``: whether its tokens get labels; without it only assistant
      turns are trained. The host renders the messages with the tokenizer's chat template. A format
      whose options subclass ``recipes.data.conversations.ConversationOptions`` gets the masking options
      (``train_on_prompt``, ``mask_history``) and calls ``recipes.data.conversations.conversation`` to
      build each record.

    ``read(path, options)`` is called once per file matched by a data source, with ``options`` an
    instance of ``options_model`` (validated when the recipe is loaded), and returns an iterable of
    records. It raises ``recipes.errors.RecipeError`` for bad content, naming the file and record
    (``recipes.data.records`` reads .json/.jsonl/.csv/.parquet with those names and checks columns).
    A malformed record goes through ``recipes.api.bad_record`` (an error, or skipped and counted under
    ``on_bad_record = "skip"``); a file all of whose records were skipped is then no error.

    ``suffixes`` (optional, lower case, e.g. ``(".pdf", ".docx")``): the files the format reads. A
    source's folder or glob then takes only the files with one of them (every file when empty); a
    file named alone is always given to ``read``.

    ``check_file(path, options)`` (optional): a quick look at one file that ``recipes validate`` (and
    the start of ``recipes run``) calls instead of reading every record, for a format whose reading is
    slow or needs heavy libraries (converting documents). It raises ``RecipeError`` naming the file
    for what it can see, through ``bad_record`` where the file would be a skipped record.
    """

    name: str
    yields: str
    read: Callable[[Any, BaseModel], Iterable[dict]]
    options_model: type[BaseModel] = NoOptions
    description: str = ""
    suffixes: tuple[str, ...] = ()
    check_file: Optional[Callable[[Any, BaseModel], None]] = None


@dataclass(frozen=True)
class QuantizationBackend:
    """A way to load the model's weights (``[quantization] backend = NAME``).

    - ``model_kwargs(options, dtype)`` returns extra keyword arguments for
      ``AutoModelForCausalLM.from_pretrained`` (for example ``quantization_config``); ``dtype`` is the
      torch dtype the stage computes in.
    - ``prepare(model, options, gradient_checkpointing)`` is called on the loaded model before the
      LoRA adapter is added, and returns the model to train (for example after
      ``peft.prepare_model_for_kbit_training``).
    - ``quantizes``: True when the loaded weights are quantized. Then a stage's adapter is never
      merged into them: the host reloads the base unquantized to merge.
    - ``bytes_per_weight(options, precision)``, optional: the bytes each weight of the quantized
      linear layers takes as loaded (scales and other constants included), for ``recipes plan``;
      ``precision`` is the stage's resolved one (``"fp32"``, ``"bf16"``, ...). The other parameters
      (embeddings, norms, the output head) are counted at that precision. None (the default) counts
      every weight at the stage's precision, as for unquantized weights.
    """

    name: str
    model_kwargs: Callable[[BaseModel, Any], dict]
    prepare: Callable[[Any, BaseModel, bool], Any]
    options_model: type[BaseModel] = NoOptions
    quantizes: bool = False
    description: str = ""
    bytes_per_weight: Optional[Callable[[BaseModel, str], float]] = None


@dataclass(frozen=True)
class StageContext:
    """What a callback factory learns about the stage it will watch."""

    run_dir: Any  # pathlib.Path of the run folder
    stage_name: str
    stage_index: int
    stage_count: int
    console: Any  # rich.console.Console the run prints to
    metrics_path: Any  # pathlib.Path of metrics.jsonl

    def stage_metrics(self, logs: dict | None) -> dict:
        """A Trainer log's numbers, each named ``<stage>/<key>`` (``domain/loss``, ``sft/eval_val_loss``),
        as floats; what a tracker logs for the stage (strings and flags left out)."""
        return {f"{self.stage_name}/{key}": float(value) for key, value in (logs or {}).items()
                if isinstance(value, (int, float)) and not isinstance(value, bool)}


@dataclass(frozen=True)
class RunContext:
    """What a callback's ``finish`` learns about the run that ended."""

    run_dir: Any  # pathlib.Path of the run folder (recipe.json, metrics.jsonl, manifest.json)
    report_dir: Any  # pathlib.Path of <run>/report: report.json, report.md and the PNGs, written
    run_name: str  # the recipe's name
    stage_names: tuple  # every stage of the plan, in order
    console: Any  # rich.console.Console the run prints to

    def report_charts(self) -> list:
        """The report's PNGs (loss.png, eval.png, ...), in name order."""
        from pathlib import Path

        return sorted(Path(self.report_dir).glob("*.png"))

    def report_files(self) -> list:
        """The report's text files (report.md, report.json), in name order."""
        from pathlib import Path

        return sorted(p for p in Path(self.report_dir).iterdir() if p.is_file() and p.suffix in (".md", ".json"))

    def eval_matrix_rows(self) -> list:
        """The report's evaluation matrix as rows ``[after, set, loss, perplexity]``: each evaluation set
        on the starting model ("start") and after each stage; [] when the run has none."""
        import json
        from pathlib import Path

        report = Path(self.report_dir) / "report.json"
        if not report.is_file():
            return []
        matrix = json.loads(report.read_text(encoding="utf-8")).get("eval_matrix") or {}
        return [[row["after"], name, value.get("loss"), value.get("perplexity")]
                for row in matrix.get("rows") or [] for name, value in row["results"].items()]


@dataclass(frozen=True)
class CallbackPlugin:
    """A training callback.

    ``build(context)`` is called at the start of each stage with a ``StageContext`` and returns a
    ``transformers.TrainerCallback`` (or None to sit this stage out). ``default``: used when the recipe
    has no ``callbacks`` list; a recipe's ``callbacks = [...]`` names exactly the ones to use.

    ``finish(context)``, optional: called once by ``recipes run`` on the main process after every
    stage has run and the report is written, with a ``RunContext``, for example to upload the
    report's PNGs to a tracker. Not called when the run fails (the stages' callbacks saw the failure).
    """

    name: str
    build: Callable[[StageContext], Optional[Any]]
    default: bool = True
    description: str = ""
    finish: Optional[Callable[[RunContext], None]] = None


@dataclass(frozen=True)
class LossFunction:
    """A way to compute a stage's training loss (``loss = NAME`` in a stage; the built-ins are
    ``chunked``, the default, and ``standard``). A plugin can provide a faster kernel this way, for
    example a fused linear cross-entropy on GPU.

    ``build(model, options)`` is called once per stage, after the LoRA adapter is added and before
    training, with ``options`` an instance of ``options_model``. It raises
    ``recipes.errors.RecipeError`` when the loss cannot run here (a GPU kernel on a CPU machine, an
    output layer it cannot handle), naming the way out, and otherwise returns
    ``loss(model, inputs, num_items_in_batch)``, which the trainer calls for every micro-batch with
    the model as the Trainer holds it (a peft model, maybe wrapped for DDP), the collated batch
    (``input_ids``; ``labels``, -100 where nothing is learned; ``attention_mask``, or
    ``position_ids`` restarting per example in packed rows) and the Trainer's ``num_items_in_batch``
    (the label count of the whole accumulated batch, or None). It returns a scalar tensor equal to
    transformers' ``model(**inputs, num_items_in_batch=...).loss``: the token cross-entropy summed
    over the labels shifted by one position, divided by ``num_items_in_batch`` (by this batch's label
    count when None), so that loss curves compare across loss functions. Evaluation calls it too,
    under ``torch.no_grad()``, with ``num_items_in_batch`` the batch's label count: a set's loss is
    then the mean over all its labelled tokens (``StageTrainer.evaluate``), never the full logits
    unless the loss builds them.

    ``logit_positions(options, tokens)``, optional: how many positions' logits the loss holds at once
    for a micro-batch of ``tokens`` tokens, so that ``recipes plan`` counts its memory; None (the
    default) counts every position, as the standard loss holds them.

    A stage's ``loss_options`` table is validated against ``options_model`` when the recipe is
    checked, and ``build`` receives the validated instance.
    """

    name: str
    build: Callable[[Any, BaseModel], Callable[[Any, dict, Any], Any]]
    options_model: type[BaseModel] = NoOptions
    logit_positions: Optional[Callable[[BaseModel, int], int]] = None
    description: str = ""


@dataclass(frozen=True)
class ExportContext:
    """What an exporter's ``write`` receives: the stage's merged model as an HF folder and where to write."""

    merged: Any  # pathlib.Path: the merged HF folder (safetensors, config, tokenizer, chat template) the host wrote
    folder: Any  # pathlib.Path: the export folder to write into (written aside, moved into place when complete)
    destination: Any  # pathlib.Path: where that folder will be once complete (for the commands to print)
    variant: str  # what the user asked for, lower case, one of the exporter's ``variants``
    name: str  # a model name for messages and commands: "<recipe name>-<stage>"
    kind: str  # the stage's kind: "pretrain" or "sft"
    console: Any  # rich.console.Console to print progress to
    modelfile: Callable[[str], str]  # FROM value -> an Ollama Modelfile (template, stops, system, parameters)


@dataclass(frozen=True)
class Exporter:
    """A file format ``recipes export RUN --to DIR --format NAME:VARIANT`` writes (``--gguf TYPE`` is
    ``--format gguf:TYPE``).

    - ``variants``: the values VARIANT may take (lower case), the first one the default.
    - ``check(variant, merged)``: called before anything is written or torch is imported, with the
      stage's published merged folder; raises ``recipes.errors.RecipeError`` when the export cannot
      be done here (a converter that is not installed, an architecture it cannot write), naming the
      way out.
    - ``bytes_needed(variant, merged_bytes)``: the bytes ``write`` adds to the export folder for a
      merged model of ``merged_bytes``; the host checks the free disk for it plus the merged folder
      before writing anything.
    - ``write(context)``: writes the export into ``context.folder`` from ``context.merged`` (an
      ``ExportContext``; the host removes the merged folder afterwards) and returns what to tell the
      user, a line each. It checks what it wrote and raises ``RecipeError`` when the check fails:
      the export is then not published.
    """

    name: str
    variants: tuple
    check: Callable[[str, Any], None]
    bytes_needed: Callable[[str, int], int]
    write: Callable[[ExportContext], list]
    description: str = ""


@dataclass(frozen=True)
class BenchmarkScorer:
    """A way to score a ``[[benchmarks]]`` table (``scorer = NAME`` in it). The built-in ``builtin``,
    the default, reads letter logits after a completion prompt; ``recipes-lm-eval`` provides
    ``lm-eval``: lm-evaluation-harness, in-process.

    ``score(request)`` is called with a ``BenchmarkRequest`` on the starting model (the first stage,
    before it trains) and on each stage's trained model, on every process of the run, under
    ``torch.inference_mode`` left to the scorer. It returns ``{entry name: row}``, each row made with
    ``recipes.api.benchmark_row`` (accuracy, interval, letter shares, per-subject accuracy, and per item
    whether it was right, which the report's paired test reads). Entry names are the benchmark's name
    or ``NAME/SOMETHING``. It raises ``RecipeError`` for bad input it finds only then.

    ``reads_files(options)``: whether the benchmark's ``path`` is a benchmark folder the host reads
    (layouts, subset, shots; ``recipes validate`` checks every row) and hands over as
    ``request.chosen``; false when ``path`` is the scorer's own (a folder of task files): then
    ``request.chosen`` is None. The table's ``options`` are validated against ``options_model``.
    """

    name: str
    score: Callable[[Any], dict]
    options_model: type[BaseModel] = NoOptions
    reads_files: Callable[[BaseModel], bool] = lambda options: True
    description: str = ""


@dataclass
class BenchmarkRequest:
    """What a ``BenchmarkScorer`` scores: the benchmark (``name``, resolved ``path``, ``shots``,
    ``batch_size``, the recipe's ``seed``, validated ``options``; ``table``: every key of its
    ``[[benchmarks]]`` table, e.g. ``chat``), the items the host chose from its
    files (``chosen``: ``items`` with ``subject``, ``key``, ``question``, ``choices``, ``answer``;
    ``shots`` per subject; ``language``; ``chance``; ``digest``; or None), the loaded ``model`` (a peft
    model, maybe on a 4-bit base) and its ``tokenizer``, a private ``work_dir`` for files, and ``say``
    (a line to the console and run.log); ``autocast_dtype``: the dtype to compute in under
    ``torch.autocast`` (a half-precision stage on GPU, whose 4-bit model keeps an fp32 output
    layer), else None."""

    name: str
    path: Any
    shots: int
    batch_size: int
    seed: int
    options: BaseModel
    chosen: Any
    model: Any
    tokenizer: Any
    work_dir: Any
    say: Callable[[str], None]
    table: dict
    autocast_dtype: Any = None


@hookspec
def register_data_formats() -> list[DataFormat]:
    """Return the data formats this plugin provides (a list of ``DataFormat``)."""


@hookspec
def register_quantization_backends() -> list[QuantizationBackend]:
    """Return the quantization backends this plugin provides (a list of ``QuantizationBackend``)."""


@hookspec
def register_callbacks() -> list[CallbackPlugin]:
    """Return the training callbacks this plugin provides (a list of ``CallbackPlugin``)."""


@hookspec
def register_loss_functions() -> list[LossFunction]:
    """Return the training loss functions this plugin provides (a list of ``LossFunction``)."""


@hookspec
def register_exporters() -> list[Exporter]:
    """Return the export formats this plugin provides (a list of ``Exporter``): what ``recipes
    export --format NAME:VARIANT`` writes from a finished stage's merged model."""


@hookspec
def register_benchmark_scorers() -> list[BenchmarkScorer]:
    """Return the benchmark scorers this plugin provides (a list of ``BenchmarkScorer``)."""


@hookspec
def register_model_families() -> list:
    """Return the model families this plugin provides (a list of ``recipes.family.ModelFamily``):
    the special tokens, chat template, module names, shapes, shipped configs, bundled models,
    recipes and data of a family of models. ``qwen_recipes`` provides Qwen's. An installation uses
    exactly one family: a second one is an error naming both plugins."""


@hookspec
def register_stage_kinds() -> list[StageKind]:
    """Return the stage kinds this plugin provides (a list of ``StageKind``): a name a stage's ``kind``
    can take, the records its data must yield, its seed settings and options model, and, for a kind
    that does not train a language-modelling loss on the host's token store, how to prepare its data
    and build its trainer and evaluation. The built-ins provide ``pretrain`` and ``sft``."""


@hookspec
def register_filters() -> list[DocumentFilter]:
    """Return the document filters this plugin provides (a list of ``DocumentFilter``): checks a
    training document must pass to be kept when a source names them in its ``filters`` table (a
    quality classifier, a language rule), or, for the filter named ``near_dedup``, when a source sets
    ``dedup = "near"``. Each removal is counted per source under the filter's name. The built-ins
    provide ``length``, ``script``, ``repeated_lines`` and ``repeated_ngrams``."""
