"""LLaMA-Factory configs -> one recipe (``recipes import llamafactory CONFIG.yaml... [-o recipe.toml]``).

LLaMA-Factory runs one stage per YAML and users chain them by hand: a pre-training config writes an
adapter to ``output_dir``, a merge config (``adapter_name_or_path`` + ``export_dir``) merges it into
the model, and the SFT config starts from that export (``model_name_or_path``), or trains on from the
adapter itself (``adapter_name_or_path``). The importer recovers that chain from the paths: a stage
whose model is the export of another stage's adapter gets ``base`` = that stage and ``chaining =
"merge"``; one whose ``adapter_name_or_path`` names another stage's output gets ``chaining =
"continue"`` (or ``"merge"`` with ``create_new_adapter``). Every key is mapped (the tables in
``llamafactory_keys``) or written into the recipe as a comment saying why it was left out. Pure
Python (PyYAML): no torch.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from recipes.config.importing.llamafactory_keys import (CHECK_BY_HAND, HANDLED, LEFT_OUT, NO_DEFAULT,
                                                        NOT_IN_PRETRAINING, PISSA_ITERATIONS, SETTINGS, TRACKERS)
from recipes.config.importing.toml_out import assignments, comment_lines, toml_value
from recipes.errors import Problem, RecipeError

KINDS = {"pt": "pretrain", "sft": "sft"}


@dataclass
class Config:
    """One LLaMA-Factory YAML: its file, text (for line numbers) and keys."""

    path: Path
    text: str
    keys: dict

    def problem(self, key: str | None, message: str) -> Problem:
        line = None
        if key is not None:
            match = re.search(rf"^\s*{re.escape(key)}\s*:", self.text, re.MULTILINE)
            line = self.text.count("\n", 0, match.start()) + 1 if match else None
        return Problem(message, file=str(self.path), line=line, field=key)

    def path_of(self, key: str) -> str | None:
        """A path-valued key, normalised for comparison (the last of a comma-separated list)."""
        value = self.keys.get(key)
        if not value:
            return None
        return os.path.normpath(str(value).split(",")[-1].strip())


@dataclass
class StageDraft:
    config: Config
    name: str
    kind: str
    base: str = "model"
    chaining: str | None = None
    settings: dict = field(default_factory=dict)
    data: list = field(default_factory=list)
    eval_data: list = field(default_factory=list)
    comments: list = field(default_factory=list)


@dataclass
class Imported:
    text: str
    checks: list[str]
    stages: list[StageDraft]


def read_config(path: Path) -> Config:
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(Problem(f"cannot read it: {exc.strerror}", file=str(path))) from exc
    try:
        keys = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise RecipeError(Problem(f"not valid YAML: {getattr(exc, 'problem', exc)}", file=str(path),
                                  line=mark.line + 1 if mark else None)) from exc
    if not isinstance(keys, dict):
        raise RecipeError(Problem("expected a LLaMA-Factory config: a YAML mapping of keys", file=str(path)))
    return Config(Path(path), text, keys)


def import_llamafactory(paths: list[Path], out: Path, dataset_dir: Path | None = None) -> Imported:
    """The recipe (TOML text) that runs the configs ``paths`` as one plan, written for the file ``out``;
    and what to check by hand."""
    configs = [read_config(p) for p in paths]
    training = [c for c in configs if "export_dir" not in c.keys]
    exports = [c for c in configs if "export_dir" in c.keys]
    if not training:
        raise RecipeError(Problem("no training config among them (one with stage: pt or sft)", file=str(paths[0])))
    checks: list[str] = []
    stages = [_draft(c, out, dataset_dir, checks) for c in training]
    _name_stages(stages)
    _chain(stages, exports, checks)
    stages = _ordered(stages)
    model = _model(stages)
    head = [f"name = {toml_value(out.stem)}",
            f"description = {toml_value('Imported from LLaMA-Factory: ' + ', '.join(str(p) for p in paths))}",
            *_callbacks(stages, checks), "",
            "[model]", f"path = {toml_value(model)}"]
    if any(s.config.keys.get("trust_remote_code") for s in stages):
        head.append("trust_remote_code = true")
    checks.insert(0, _model_check(model))
    lines = head + _export_comments(exports, stages) + _quantization(stages) + _distributed(stages, checks)
    for stage in stages:
        lines += ["", *_stage_lines(stage)]
    return Imported("\n".join(lines) + "\n", checks, stages)


def _draft(config: Config, out: Path, dataset_dir: Path | None, checks: list[str]) -> StageDraft:
    keys = config.keys
    stage = keys.get("stage", "sft")
    if stage not in KINDS:
        raise RecipeError(config.problem("stage", f"stage {stage!r} is not supported: recipes trains pre-training "
                                         "(pt) and SFT (sft) stages only"))
    if keys.get("finetuning_type", "lora") != "lora":
        raise RecipeError(config.problem("finetuning_type", f"finetuning_type {keys['finetuning_type']!r}: recipes "
                                         "trains LoRA and QLoRA only; set finetuning_type: lora to import it as LoRA"))
    if keys.get("do_train") is False:
        raise RecipeError(config.problem("do_train", "do_train: false: this config trains nothing; leave it out"))
    draft = StageDraft(config, name="", kind=KINDS[stage])
    draft.settings = _settings(config, draft.kind)
    info = _dataset_info(config, dataset_dir)
    options = {k: True for k in ("train_on_prompt", "mask_history") if keys.get(k) and draft.kind == "sft"}
    draft.data = _sources(config, "dataset", info, out, options)
    draft.eval_data = _sources(config, "eval_dataset", info, out, options) if keys.get("eval_dataset") else []
    if not draft.data:
        raise RecipeError(config.problem("dataset", "no dataset: name the LLaMA-Factory data set(s) to train on"))
    draft.comments = _left_out(config, draft.kind, checks)
    return draft


def _settings(config: Config, kind: str) -> dict:
    keys, out = config.keys, {}
    for key, (name, default) in SETTINGS.items():
        value = keys.get(key, default)
        if key == "lora_alpha" and value is None:
            value = 2 * int(keys.get("lora_rank", 8))  # LLaMA-Factory: lora_rank * 2
        if value is NO_DEFAULT or value is None or (key == "max_steps" and int(value) <= 0):
            continue
        out[name] = _coerce(config, key, value)
    if "warmup_steps" in out and "warmup_ratio" not in keys:
        out.pop("warmup_ratio", None)
    if kind == "sft":  # LLaMA-Factory packs SFT data only when asked; neat_packing is our only kind
        out["packing"] = bool(keys.get("packing") or keys.get("neat_packing"))
    out["precision"] = "bf16" if keys.get("bf16") or keys.get("pure_bf16") else "fp16" if keys.get("fp16") else "auto"
    if keys.get("disable_gradient_checkpointing"):
        out["gradient_checkpointing"] = False
    if keys.get("pissa_init"):
        iterations = int(keys.get("pissa_iter", PISSA_ITERATIONS))
        out["init_lora_weights"] = "pissa" if iterations < 0 else f"pissa_niter_{iterations}"
    if kind == "pretrain":
        out.pop("neftune_noise_alpha", None)
    return out


def _callbacks(stages: list[StageDraft], checks: list[str]) -> list[str]:
    """``report_to`` (any stage's) as the recipe's ``callbacks``: "none" keeps the progress and
    metrics.jsonl only; each tracker with a callback plugin is named; others are a check line."""
    names: list[str] = []
    for stage in stages:
        value = stage.config.keys.get("report_to")
        for name in ([value] if isinstance(value, str) else value or []):
            name = str(name).strip().lower()
            if name and name not in names:
                names.append(name)
    if not names or names == ["all"]:
        return []
    callbacks = ["progress", "metrics_jsonl"]
    for name in names:
        if name in TRACKERS:
            callbacks.append(TRACKERS[name])
            if name in ("mlflow", "wandb"):
                checks.append(f"report_to {name}: the \"{name}\" callback comes from the recipes-{name} plugin "
                              f"package (pip install -e plugins/recipes-{name})")
        elif name != "none":
            checks.append(f"report_to {name}: no recipes callback plugin for it; left out (metrics.jsonl and the "
                          "report hold the same numbers)")
    return [f"callbacks = {toml_value(callbacks)}"]


def _coerce(config: Config, key: str, value):
    """YAML reads ``1e-4`` as a string; LLaMA-Factory's argument parser converts it, and so do we."""
    if key == "lora_target":
        names = [v.strip() for v in str(value).split(",") if v.strip()] if isinstance(value, str) else list(value)
        return "all" if names == ["all"] else names
    from recipes.config.schema import StageSettings

    annotation = str(StageSettings.model_fields[SETTINGS[key][0]].annotation)
    try:
        if "float" in annotation and not isinstance(value, bool):
            return float(value)
        if "int" in annotation and not isinstance(value, bool):
            return int(value) if float(value) == int(float(value)) else value
    except (TypeError, ValueError):
        raise RecipeError(config.problem(key, f"{key}: {value!r} is not a number")) from None
    return value


def _dataset_info(config: Config, dataset_dir: Path | None) -> Path:
    folder = dataset_dir or Path(str(config.keys.get("dataset_dir", "data")))
    info = (folder if folder.is_absolute() else Path.cwd() / folder) / "dataset_info.json"
    if not info.is_file():
        raise RecipeError(config.problem("dataset_dir" if "dataset_dir" in config.keys else "dataset",
                                         f"no dataset_info.json at {info} (LLaMA-Factory reads dataset_dir, default "
                                         "\"data\", from the folder it runs in): run the import from there, or give "
                                         "--dataset-dir DIR"))
    return info


def _sources(config: Config, key: str, info: Path, out: Path, options: dict) -> list[dict]:
    names = config.keys.get(key) or []
    names = [n.strip() for n in names.split(",")] if isinstance(names, str) else [str(n) for n in names]
    relative = os.path.relpath(info.resolve(), out.resolve().parent)
    return [{"dataset_info": relative, "dataset": name, "options": dict(options) or None} for name in names if name]


def _left_out(config: Config, kind: str, checks: list[str]) -> list[str]:
    comments = []
    for key, value in config.keys.items():
        shown = f"{key} = {_shown(value)}"
        if kind == "pretrain" and key in NOT_IN_PRETRAINING:
            comments.append(f"{shown}: {NOT_IN_PRETRAINING[key]}")
        elif key == "template":
            comments.append(f"{shown}: SFT text is rendered by the model's own chat template")
            checks.append(f"{config.path}: template {value!r}: SFT text is rendered by the model's own chat "
                          "template (its tokenizer_config.json); check that it is the one you trained with")
        elif key in SETTINGS or key in HANDLED:
            continue
        elif key in LEFT_OUT:
            comments.append(f"{shown}: left out; {LEFT_OUT[key]}")
            if key in CHECK_BY_HAND:
                checks.append(f"{config.path}: {shown} is left out ({LEFT_OUT[key]})")
        else:
            comments.append(f"{shown}: left out; the importer does not know this key")
            checks.append(f"{config.path}: {shown}: unknown to the importer, left out; check by hand")
    return comments


def _shown(value) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _name_stages(stages: list[StageDraft]) -> None:
    taken: set[str] = {"model"}
    for stage in stages:
        output = stage.config.path_of("output_dir")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(output).name if output else "").lstrip("-._") or stage.kind
        candidate, number = name, 2
        while candidate in taken:
            candidate, number = f"{name}-{number}", number + 1
        stage.name = candidate
        taken.add(candidate)


def _chain(stages: list[StageDraft], exports: list[Config], checks: list[str]) -> None:
    """Each stage's base and chaining, from the paths; the exports that chain nothing become checks."""
    by_output = {s.config.path_of("output_dir"): s for s in stages if s.config.path_of("output_dir")}
    merged_into: dict[str, StageDraft] = {}
    for export in exports:
        source = by_output.get(export.path_of("adapter_name_or_path"))
        if source is None:
            raise RecipeError(export.problem("adapter_name_or_path", "this merge config's adapter is not the "
                                             "output_dir of any training config given; give that config too"))
        merged_into[export.path_of("export_dir")] = source
        if export.path_of("model_name_or_path") != source.config.path_of("model_name_or_path"):
            checks.append(f"{export.path}: merges into {export.keys.get('model_name_or_path')}, but stage "
                          f"{source.name} trained on {source.config.keys.get('model_name_or_path')}; the recipe "
                          "merges into the model the stage trained on")
    used = set()
    for stage in stages:
        model, adapter = stage.config.path_of("model_name_or_path"), stage.config.path_of("adapter_name_or_path")
        if model in merged_into:
            stage.base, stage.chaining = merged_into[model].name, "merge"
            used.add(model)
        elif adapter is not None:
            if adapter not in by_output:
                raise RecipeError(stage.config.problem("adapter_name_or_path", "it names no output_dir of the "
                                                       "configs given; give the config that trained that adapter"))
            stage.base = by_output[adapter].name
            stage.chaining = "merge" if stage.config.keys.get("create_new_adapter") else "continue"
        if stage.base == stage.name:
            raise RecipeError(stage.config.problem("output_dir", "the stage starts from its own output"))
    for export_dir, source in merged_into.items():
        if export_dir not in used:
            size = next((e.keys.get("export_size") for e in exports if e.path_of("export_dir") == export_dir), None)
            shard = f" --max-shard-size {size}GB" if size else ""
            checks.append(f"export_dir {export_dir}: every stage publishes its merged model in the run folder; "
                          f"`recipes export RUN --stage {source.name} --to {export_dir}{shard}` writes it there")


def _export_comments(exports: list[Config], stages: list[StageDraft]) -> list[str]:
    """What became of each merge/export config, as comments under [model]."""
    lines = []
    for export in exports:
        source = next(s for s in stages if s.config.path_of("output_dir") == export.path_of("adapter_name_or_path"))
        users = [s.name for s in stages if s.config.path_of("model_name_or_path") == export.path_of("export_dir")]
        became = (f"stage {', '.join(users)} starts from it (chaining = \"merge\")" if users else
                  f"`recipes export RUN --stage {source.name} --to DIR` writes it")
        lines += [f"{export.path}: merges stage {source.name}'s adapter into its model; {became}",
                  *(f"  {key} = {_shown(value)}: left out; the merge is a step of the run" for key, value in
                    export.keys.items() if key not in ("model_name_or_path", "adapter_name_or_path", "export_dir"))]
    return comment_lines(lines)


def _ordered(stages: list[StageDraft]) -> list[StageDraft]:
    """Stages in an order where each base comes first (the configs' order otherwise)."""
    done: list[StageDraft] = []
    names = {s.name: s for s in stages}
    while len(done) < len(stages):
        ready = [s for s in stages if s not in done and (s.base == "model" or names[s.base] in done)]
        if not ready:
            raise RecipeError(stages[0].config.problem(None, "the configs start from each other in a circle"))
        done.append(ready[0])
    return done


def _model(stages: list[StageDraft]) -> str:
    roots = {s.config.keys.get("model_name_or_path") for s in stages if s.base == "model"}
    if len(roots) != 1 or None in roots:
        first = next(s for s in stages if s.base == "model")
        raise RecipeError(first.config.problem("model_name_or_path", "a recipe starts from one model; the stages "
                                               f"that start from a model name {sorted(map(str, roots))}"))
    return str(roots.pop())


def _model_check(model: str) -> str:
    if model.startswith("bundled:") or Path(model).is_dir():
        return f"model {model}: found"
    return (f"model {model}: a hub id; recipes downloads nothing: `hf download {model}` first, or set [model] "
            "path to a local folder")


def _quantization(stages: list[StageDraft]) -> list[str]:
    seen = {(s.config.keys.get("quantization_bit"), s.config.keys.get("quantization_method", "bnb"),
             s.config.keys.get("quantization_type", "nf4"), s.config.keys.get("double_quantization", True))
            for s in stages}
    if len(seen) > 1:
        raise RecipeError(stages[0].config.problem("quantization_bit", "a recipe quantizes every stage alike; these "
                                                   f"configs differ ({sorted(map(str, seen))}): make them agree"))
    bits, method, kind, double = seen.pop()
    if bits is None:
        return []
    if method not in ("bnb", "bitsandbytes") or int(bits) not in (4, 8):
        raise RecipeError(stages[0].config.problem("quantization_method", f"{bits}-bit {method} quantization: "
                                                   "recipes quantizes with bitsandbytes in 4 or 8 bits only"))
    values = {"backend": "bitsandbytes", "bits": int(bits)}
    if int(bits) == 4:
        values.update(quant_type=kind, double_quant=bool(double))
    return ["", "[quantization]", *assignments(values)]


def _distributed(stages: list[StageDraft], checks: list[str]) -> list[str]:
    paths = {s.config.keys.get("deepspeed") for s in stages} - {None}
    if not paths:
        return []
    path = sorted(map(str, paths))[0]
    try:
        zero = json.loads(Path(path).read_text(encoding="utf-8")).get("zero_optimization", {})
        stage, offload = int(zero.get("stage", 0)), zero.get("offload_optimizer", {}).get("device") == "cpu"
    except (OSError, ValueError, AttributeError):
        match = re.search(r"z(\d)", Path(path).name)
        stage, offload = (int(match.group(1)) if match else 0), "offload" in path
        checks.append(f"deepspeed {path}: not readable here; ZeRO stage {stage} taken from its name")
    if stage < 2:
        return ["", "[distributed]", 'strategy = "ddp"  # deepspeed ZeRO-0/1: plain data parallel here']
    if stage == 3:  # ZeRO-3 partitions lm_head outside its forward: the chunked loss cannot read it
        for draft in stages:
            draft.settings["loss"] = "standard"
        checks.append("deepspeed ZeRO-3: the stages use loss = \"standard\" (full logits, as LLaMA-Factory computes "
                      "it); the chunked loss cannot read a partitioned output layer")
    return ["", "[distributed]", 'strategy = "deepspeed"', f"zero_stage = {stage}", f"cpu_offload = {toml_value(offload)}"]


def _stage_lines(stage: StageDraft) -> list[str]:
    lines = ["[[stages]]", f"name = {toml_value(stage.name)}", f"kind = {toml_value(stage.kind)}",
             f"base = {toml_value(stage.base)}"]
    if stage.chaining:
        lines.append(f"chaining = {toml_value(stage.chaining)}")
    lines += assignments(stage.settings)
    lines += comment_lines([f"from {stage.config.path}:", *stage.comments]) if stage.comments else []
    for table, sources in (("data", stage.data), ("eval_data", stage.eval_data)):
        for source in sources:
            lines += ["", f"[[stages.{table}]]", *assignments(source)]
    return lines
