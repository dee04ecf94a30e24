"""A validated recipe becomes a plan: ordered stages, each with its base, data, settings and folders.
No torch needed up to here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from recipes.plugins.hookspecs import CallbackPlugin, LossFunction, QuantizationBackend, StageKind
from recipes.config.loaded import LoadedRecipe
from recipes.plugins.registry import Registry
from recipes.config.schema import StageSettings


@dataclass(eq=False)
class Source:
    """One data source of a stage as the data phase reads it; unpacks as ``(format, options, files)``.
    ``weight``, ``max_samples`` and ``max_tokens`` decide its part of the stage's mix
    (``recipes.data.mixing``)."""

    format: object  # DataFormat
    options: BaseModel
    files: list
    name: str
    weight: float | None = None
    max_samples: int | None = None
    max_tokens: int | None = None
    main: bool | None = None  # one epoch of the stage is one pass over this source
    cleaning: object = None  # recipes.data.cleaning.Cleaning of a training source the host tokenizes; else None

    def __iter__(self):
        return iter((self.format, self.options, self.files))

    def cleaning_json(self) -> dict:
        """The source's cleaning settings (empty when kept whole): for recipe.json, the fingerprint and
        the ready record."""
        c = self.cleaning
        if c is None:
            return {}
        return {"cleaning": {"dedup": c.dedup, "near_threshold": c.near_threshold if c.dedup == "near" else None,
                             "normalize": c.normalize, "script": c.script, "filters": [list(f) for f in c.filters]}}

    def mix_json(self) -> dict:
        """What of the mix the recipe set (empty when nothing): for recipe.json and the fingerprint."""
        return {k: getattr(self, k) for k in ("weight", "max_samples", "max_tokens", "main") if getattr(self, k) is not None}


@dataclass
class StagePlan:
    index: int
    name: str
    kind: str
    base: str  # "model" or the name of an earlier stage
    settings: StageSettings
    sources: list  # a Source per data source
    folder: Path
    eval_sources: list = field(default_factory=list)  # the same, per `eval_data` source
    loss: LossFunction | None = None  # the loss plugin's provider
    loss_options: BaseModel | None = None  # validated by its options model
    samples: tuple[str, ...] = ()  # prompts answered after the stage (continued as text, or as chat)
    benchmarks: bool = True  # the plan's benchmarks are scored after this stage
    kind_provider: StageKind | None = None  # the stage kind's plugin provider
    kind_options: BaseModel | None = None  # the stage's kind_options, validated by its options model
    backend: QuantizationBackend | None = None  # how the stage loads its weights: its own or the recipe's
    backend_options: BaseModel | None = None  # [quantization]'s options, validated by the backend's model
    decontaminate: bool = True  # training documents sharing a long n-gram with an evaluation set go
    references: object = None  # what they are checked against (recipes.data.contamination.References)

    @property
    def quantization(self) -> dict:
        """``{"backend": NAME, **options}``: for recipe.json, the fingerprint and the memory estimate."""
        return {"backend": self.backend.name, **self.backend_options.model_dump(mode="json")}

    @property
    def records(self) -> str:
        """What the stage's data formats yield (``StageKind.records``)."""
        return self.kind_provider.records

    @property
    def language_modelling(self) -> bool:
        """Whether the host trains it (token store, the stage's loss, perplexity); else its kind's plugin."""
        return self.kind_provider.build is None

    def logit_positions(self, tokens: int) -> int | None:
        """How many positions' logits the stage's loss holds at once (None: every position)."""
        if self.loss is None or self.loss.logit_positions is None:
            return None
        return self.loss.logit_positions(self.loss_options, tokens)

    @property
    def adapter_dir(self) -> Path:
        return self.folder / "adapter"

    @property
    def merged_dir(self) -> Path:
        return self.folder / "merged"

    @property
    def checkpoint_dir(self) -> Path:
        return self.folder / "checkpoints"

    @property
    def effective_batch(self) -> int:
        return self.settings.per_device_train_batch_size * self.settings.gradient_accumulation_steps


@dataclass
class Plan:
    name: str
    recipe_path: Path
    run_dir: Path
    model_path: str
    revision: str | None
    trust_remote_code: bool
    backend: QuantizationBackend
    backend_options: object
    callbacks: list[CallbackPlugin]
    stages: list[StagePlan]
    recipe_json: str
    distributed: object = None  # schema.Distributed
    losses: dict = field(default_factory=dict)  # loss name -> LossFunction provider
    samples_max_new_tokens: int = 64
    eval_matrix: bool = True  # every stage's evaluation sets on the starting model and after each stage
    benchmarks: list = field(default_factory=list)  # BenchmarkPlan per [[benchmarks]] (none without eval_matrix)

    def stage(self, name: str) -> StagePlan:
        return next(s for s in self.stages if s.name == name)

    def up_to(self, name: str | None, option: str = "--until") -> "Plan":
        """The plan of the stages up to and including ``name`` (the whole plan for None)."""
        if name is None:
            return self
        from dataclasses import replace

        last = self.selected(name, option)[0]
        return replace(self, stages=self.stages[:last.index + 1])

    def selected(self, name: str | None, option: str = "--stage") -> list[StagePlan]:
        """Every stage, or the one a ``--stage NAME`` option names (a RecipeError with a hint if none)."""
        if name is None:
            return list(self.stages)
        found = [s for s in self.stages if s.name == name]
        if not found:
            from recipes.config.schema import did_you_mean
            from recipes.errors import RecipeError

            raise RecipeError(f"{option} {name}: no such stage; {did_you_mean(name, [s.name for s in self.stages])}")
        return found


def run_folder(loaded: LoadedRecipe, output_dir: str | None = None) -> Path:
    """The run folder: ``output_dir`` as given (``-o``, relative to the current directory), else the
    recipe's ``output_dir``, else ``runs/<name>``, both relative to the recipe file, so that a run
    of the same recipe from another directory finds its folder. A bundled recipe's runs go under the
    current directory."""
    if output_dir:
        return Path(output_dir).expanduser().resolve()
    from recipes.family import family

    bundled = loaded.path.resolve() in {p.resolve() for p in family().bundled_recipes().values()}
    home = Path.cwd() if bundled else loaded.path.resolve().parent
    return (home / Path(loaded.recipe.output_dir or Path("runs") / loaded.name).expanduser()).resolve()


def make_plan(loaded: LoadedRecipe, registry: Registry, output_dir: str | None = None) -> Plan:
    recipe = loaded.recipe
    run_dir = run_folder(loaded, output_dir)
    backend, backend_options = _loading(recipe.quantization, registry)
    if recipe.callbacks is None:
        callbacks = [c for c in registry.callbacks.values() if c.default]
    else:
        callbacks = [registry.callbacks[name] for name in recipe.callbacks]
    stages = []
    from recipes.family import family

    native = (loaded.model is not None and family().native_config is not None
              and family().native_config(loaded.model.config) is not None)
    for index, stage in enumerate(recipe.stages):
        base = recipe.base_of(index)
        cleaned = registry.kinds[stage.kind].build is None  # the host tokenizes it: its training data is cleaned
        sources, eval_sources = ([_source(loaded.sources[(index, group, j)], registry, spec,
                                          stage.name if cleaned and group == "data" else None)
                                  for j, spec in enumerate(getattr(stage, group))] for group in ("data", "eval_data"))
        settings = stage.settings(recipe.defaults)
        if native:  # trains as its native conversion (Qwen v1 as Qwen2): LoRA names become the native ones
            settings = settings.model_copy(update={"lora_target": family().native_targets(settings.lora_target)[0]})
        loss, kind = registry.losses[settings.loss], registry.kinds[stage.kind]
        stages.append(StagePlan(index, stage.name, stage.kind, base, settings, sources,
                                run_dir / "stages" / stage.name, eval_sources, loss,
                                loss.options_model.model_validate(settings.loss_options),
                                tuple(recipe.stage_samples(index)), stage.benchmarks, kind,
                                kind.options_model.model_validate(stage.kind_options),
                                *_loading(recipe.stage_quantization(index), registry),
                                decontaminate=stage.decontaminate))
    model_path = recipe.model.path
    if not model_path.startswith("bundled:"):
        local = Path(model_path).expanduser()
        local = local if local.is_absolute() else loaded.path.parent / local
        if local.exists():
            model_path = str(local.resolve())
    resolved = {
        "recipe": recipe.model_dump(mode="json"),
        "model_path": model_path,
        "quantization": {"backend": backend.name, **backend_options.model_dump(mode="json")},
        "callbacks": [c.name for c in callbacks],
        "distributed": recipe.distributed.model_dump(mode="json"),
        "stages": [{"name": st.name, "kind": st.kind, "base": st.base, "settings": st.settings.as_dict(),
                    "kind_options": st.kind_options.model_dump(mode="json"), "quantization": st.quantization,
                    "data": _sources_json(st.sources), "eval_data": _sources_json(st.eval_sources)}
                   for st in stages],
    }
    plan = Plan(loaded.name, loaded.path, run_dir, model_path, recipe.model.revision,
                recipe.model.trust_remote_code, backend, backend_options, callbacks, stages,
                json.dumps(resolved, indent=2, ensure_ascii=False), recipe.distributed, dict(registry.losses),
                recipe.samples_max_new_tokens, recipe.eval_matrix, _benchmarks(loaded, registry))
    from recipes.data.contamination import References

    references = References.of(stages, plan.benchmarks)  # every stage's evaluation sets, whatever --until says
    for stage in stages:
        stage.references = references if stage.decontaminate else None
    return plan


def _loading(quantization, registry: Registry) -> tuple:
    """(the quantization backend, its validated options) of a ``[quantization]`` table (None: unquantized)."""
    backend = registry.backends[quantization.backend if quantization else "none"]
    return backend, backend.options_model.model_validate(quantization.options() if quantization else {})


def _benchmarks(loaded: LoadedRecipe, registry: Registry) -> list:
    """The recipe's benchmarks, paths resolved, with the recipe's seed (what draws their subsets)."""
    from recipes.benchmarks.selection import plan_benchmark
    from recipes.config.schema import KIND_DEFAULTS

    recipe = loaded.recipe
    if not recipe.eval_matrix:
        return []
    seed = recipe.defaults.seed if recipe.defaults.seed is not None else KIND_DEFAULTS["pretrain"]["seed"]
    return [plan_benchmark(spec, loaded.path.resolve().parent, seed, registry) for spec in recipe.benchmarks]


def _source(resolved, registry: Registry, spec, stage: str | None) -> Source:
    """A source as the data phase reads it; ``stage``: the stage whose training data it is, when cleaned."""
    from recipes.data.cleaning import source_cleaning

    fmt = registry.formats[resolved.format]
    name = spec.default_name()
    return Source(fmt, fmt.options_model.model_validate(resolved.options), resolved.files, name,
                  spec.weight, spec.max_samples, spec.max_tokens, spec.main,
                  source_cleaning(spec, stage, name) if stage is not None else None)


def _sources_json(sources: list) -> list:
    return [{"name": source.name, "format": source.format.name, "options": source.options.model_dump(mode="json"),
             "files": [str(f) for f in source.files], **source.mix_json(), **source.cleaning_json()}
            for source in sources]
