"""The stage-kind providers of the plugin contract (``register_stage_kinds`` in
recipes.plugins.hookspecs): a kind, and what its ``prepare``, ``build`` and ``inspect`` receive and return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional

from pydantic import BaseModel

from recipes.plugins.no_options import NoOptions


@dataclass(frozen=True)
class KindData:
    """What a stage kind's ``prepare`` learns about the stage whose data it reads."""

    stage_name: str
    settings: Any  # the stage's resolved settings (recipes' StageSettings: frozen, typed attributes)
    options: BaseModel  # the stage's ``kind_options``, an instance of the kind's ``options_model``
    sources: tuple  # per ``data`` source: (DataFormat, its options instance, [files], source name)
    tokenizer: Any  # the stage's tokenizer, with a chat template when the kind is ``chat``
    say: Callable[[str], None]  # prints a line to the run's console and run.log
    # every data source's records in order, read under the stage's on_bad_record policy (a record
    # skipped as bad is counted and said; more than max_bad_records is an error)
    records: Callable[[], Iterable[dict]] = lambda: ()


@dataclass(frozen=True)
class KindTraining:
    """What a stage kind's ``build`` gets to train with: the host has loaded the model and attached
    the adapters (``chaining``), and built the training arguments and the callbacks."""

    stage_name: str
    settings: Any
    options: BaseModel
    tokenizer: Any
    model: Any  # a peft model: the stage's trainable LoRA adapter is the active one
    chaining: str  # "merge" (a new adapter on the earlier stage's merged model), "continue" or "stack"
    earlier_adapter: Any  # continue: the folder of the adapter being continued (pathlib.Path); else None
    args: Any  # transformers.TrainingArguments: output_dir, steps, optimizer, precision, checkpoints, seed
    callbacks: list  # the plugins' callbacks and the host's checkpoint guard: pass them to the Trainer
    loss_chunk_size: Optional[int]  # the chunked loss's chunk (positions) when the stage's loss is chunked
    say: Callable[[str], None]


@dataclass
class KindTrainer:
    """What a stage kind's ``build`` returns.

    - ``trainer``: a ``transformers.Trainer`` (or a subclass, TRL's included) over ``KindTraining.model``
      built with ``KindTraining.args`` and ``callbacks``; the host calls ``trainer.train`` (resuming from
      a checkpoint after a kill) and publishes the adapter it trained.
    - ``evaluate()``: the stage's own evaluation sets on the model as it is now, ``{set: {metric: number}}``
      (for example ``{"val": {"accuracy": 0.75, "margin": 0.4}}``); called before and after training.
      ``loss`` and ``perplexity`` metrics make the set a perplexity column of the evaluation matrix;
      others are shown as they are.
    """

    trainer: Any
    evaluate: Callable[[], dict]


@dataclass(frozen=True)
class StageKind:
    """A kind of stage (``kind = NAME`` in a stage).

    - ``records``: the ``yields`` of the data formats its ``data`` sources must use (``"documents"``,
      ``"conversations"``, or records of the kind's own, e.g. ``"preferences"``).
    - ``defaults``: the kind's seed values for the training settings (``lora_rank``, ``learning_rate``,
      ...), over the seed plan; a stage's own keys and ``[defaults]`` win over them.
    - ``options_model``: the kind's own settings, a stage's ``kind_options`` table (validated when the
      recipe is checked, part of the stage's fingerprint, in ``recipes schema``).
    - ``chat``: its data is rendered with the chat template: the samples are answered as chat, the
      merged model ends turns with the family's turn end, ``train_tokens = "auto"`` trains the chat
      tokens' rows where the starting model does not know them.
    - ``follows``: the kinds a stage of this kind is meant to start from; ``recipes validate`` warns
      when it starts from an earlier stage of another kind (e.g. DPO straight after pre-training).
    - ``check(settings, options)``, optional: the settings this kind cannot run with, as ``[(setting,
      message)]`` (e.g. ``("chaining", "...")``); ``recipes validate`` reports each at the setting's line.
    - ``sequences_per_example``: how many sequences one training example puts through the model (2
      for a preference pair: chosen and rejected), for the memory ``recipes plan`` counts.
    - ``prepare(KindData)`` and ``build(KindTraining, prepared)``: None for a language-modelling kind
      (``pretrain``, ``sft``): the host tokenizes into its token store and trains with its own Trainer
      and loss. A kind with its own training provides both: ``prepare`` reads and tokenizes the data
      before the model is loaded (so a data mistake costs no model load), raising ``RecipeError``
      with ``file:line`` for a bad record, and returns an object with ``stats`` (a dict of counts for
      stage.json) and ``lines`` (what the run log says about the data); ``build`` returns a
      ``KindTrainer``. ``inspect(KindData, count)``, optional, for ``recipes data inspect``: a dict
      with ``counts`` (name -> number) and ``examples``, up to ``count`` of them, each a dict of parts
      shown side by side (e.g. ``chosen`` and ``rejected``), each part ``{"input_ids", "labels"}``
      (-100 where nothing is learned).
    """

    name: str
    records: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    options_model: type[BaseModel] = NoOptions
    chat: bool = False
    follows: tuple = ()
    sequences_per_example: int = 1
    check: Optional[Callable[[Any, BaseModel], list]] = None
    prepare: Optional[Callable[[KindData], Any]] = None
    build: Optional[Callable[[KindTraining, Any], KindTrainer]] = None
    inspect: Optional[Callable[[KindData, int], list]] = None
    description: str = ""
