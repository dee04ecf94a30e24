"""What an import of LLaMA-Factory configs decides for the whole recipe: one YAML read as a ``Config``,
a stage drafted from it (``StageDraft``), and the recipe-wide choices taken from every config: the
model and its revision, the callbacks (``report_to``), the quantization and the distributed strategy
(with a line for each stage whose own config chose otherwise), and the TOML lines of a stage. Pure
Python: no torch.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from recipes.config.importing.toml_out import assignments, comment_lines, toml_value
from recipes.errors import Problem, RecipeError


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
    quantization: dict | None = None  # its own [stages.quantization], where the configs quantize differently


@dataclass
class Imported:
    text: str
    checks: list[str]
    stages: list[StageDraft]


def model(stages: list[StageDraft]) -> str:
    roots = {s.config.keys.get("model_name_or_path") for s in stages if s.base == "model"}
    if len(roots) != 1 or None in roots:
        first = next(s for s in stages if s.base == "model")
        raise RecipeError(first.config.problem("model_name_or_path", "a recipe starts from one model; the stages "
                                               f"that start from a model name {sorted(map(str, roots))}"))
    return str(roots.pop())


def model_check(model: str) -> str:
    from recipes.config.model_info import is_hub_id

    if model.startswith("bundled:") or Path(model).is_dir():
        return f"model {model}: found"
    if not is_hub_id(model):
        return (f"model {model}: neither a folder here nor a hub id (org/name): set [model] path to the model's "
                "local folder")
    return (f"model {model}: a hub id; recipes downloads nothing: `hf download {model}` first, or set [model] "
            "path to a local folder")


def revision(stages: list[StageDraft], exports: list[Config]) -> str | None:
    """The model's pinned hub revision (``model_revision``; ``main`` is the default branch)."""
    configs = [s.config for s in stages if s.base == "model"] + exports
    found = {str(c.keys["model_revision"]) for c in configs if c.keys.get("model_revision") not in (None, "main")}
    if len(found) > 1:
        first = next(c for c in configs if c.keys.get("model_revision") not in (None, "main"))
        raise RecipeError(first.problem("model_revision", f"the configs pin different revisions of the model "
                                        f"({', '.join(sorted(found))}); a recipe starts from one: make them agree"))
    return found.pop() if found else None


def callbacks(stages: list[StageDraft], checks: list[str]) -> list[str] | None:
    """report_to as the recipe's callbacks (None: the default ones)."""
    from recipes.plugins.registry import get_registry

    registry = get_registry()
    default = [c.name for c in registry.callbacks.values() if c.default]
    wanted: list[str] = []
    given = False
    for stage in stages:
        value = stage.config.keys.get("report_to")
        if value is None:
            continue
        given = True
        for tracker in ([value] if isinstance(value, str) else list(value)):
            tracker = str(tracker).strip().lower()
            if tracker in ("none", ""):
                continue
            if tracker in ("all", "tensorboard"):
                wanted += [n for n in default if n not in wanted]
            elif tracker in registry.callbacks:
                wanted += [n for n in ("progress", "metrics_jsonl", tracker) if n not in wanted]
            elif tracker in ("mlflow", "wandb", "swanlab"):
                checks.append(f"{stage.config.path}: report_to {tracker}: install the recipes-{tracker} plugin (pip "
                              f"install -e plugins/recipes-{tracker}) and add \"{tracker}\" to the recipe's callbacks")
            else:
                checks.append(f"{stage.config.path}: report_to {tracker}: no equivalent; recipes logs to "
                              "metrics.jsonl (and TensorBoard, MLflow, W&B, SwanLab)")
    if not given:
        return None
    chosen = [n for n in ("progress", "metrics_jsonl") if n not in wanted] + wanted
    chosen = [n for n in chosen if n in registry.callbacks]
    return None if set(chosen) == set(default) else chosen


def quantization(stages: list[StageDraft], checks: list[str], fsdp: bool = False) -> list[str]:
    """How each stage loads its weights, as its own config says: one [quantization] when every config
    agrees; else each quantizing stage's own [stages.quantization] (the others train unquantized), and a
    stage that LLaMA-Factory would continue across different weights starts from the merged model."""
    kinds = {s.name: _quant_kind(s.config) for s in stages}
    quantizing = [s for s in stages if kinds[s.name] is not None]
    for stage in quantizing:
        bits, method = kinds[stage.name][:2]
        if method not in ("bnb", "bitsandbytes") or bits not in (4, 8):
            raise RecipeError(stage.config.problem("quantization_method", f"{bits}-bit {method} quantization: "
                                                   "recipes quantizes with bitsandbytes in 4 or 8 bits only"))
    if not quantizing:
        return []
    if len(set(kinds.values())) == 1:
        return ["", "[quantization]", *assignments(_quant_values(kinds[quantizing[0].name], fsdp))]
    for stage in stages:
        if kinds[stage.name] is not None:
            stage.quantization = _quant_values(kinds[stage.name], fsdp)
        if stage.base in kinds and kinds[stage.base] != kinds[stage.name] and stage.chaining != "merge":
            checks.append(f"stage {stage.name} ({stage.config.path.name}) continues {stage.base}'s adapter in "
                          f"LLaMA-Factory on {_quant_words(kinds[stage.name])} weights, and {stage.base} trained it on "
                          f"{_quant_words(kinds[stage.base])} weights: here it starts from {stage.base}'s merged model "
                          "(chaining = \"merge\"), quantized as it loads, with a new adapter")
            stage.chaining = "merge"
    checks.append("the configs quantize differently: " + ", ".join(
        f"{s.name} {_quant_words(kinds[s.name])}" for s in stages) + "; each stage loads its weights as its own "
        "config says ([stages.quantization])")
    return []


def _quant_kind(config: Config) -> tuple | None:
    keys = config.keys
    if keys.get("quantization_bit") is None:
        return None
    return (int(keys["quantization_bit"]), keys.get("quantization_method", "bnb"),
            keys.get("quantization_type", "nf4"), bool(keys.get("double_quantization", True)))


def _quant_values(kind: tuple, fsdp: bool) -> dict:
    bits, _, quant_type, double = kind
    values = {"backend": "bitsandbytes", "bits": bits}
    if bits == 4:
        values.update(quant_type=quant_type, double_quant=double)
        if fsdp:  # as LLaMA-Factory loads 4-bit weights, and as FSDP needs them: stored in the compute dtype
            values["quant_storage"] = "bf16"
    return values


def _quant_words(kind) -> str:
    if kind is None:
        return "unquantized"
    bits, method, quant_type, double = kind
    return f"{bits}-bit {method}" + (f" {quant_type}" + (", double quantization" if double else "") if bits == 4 else "")


def strategy(config: Config, checks: list[str]) -> dict:
    """One config's own [distributed] choice: from its deepspeed JSON or its fsdp options ({} for none)."""
    keys = config.keys
    if keys.get("fsdp"):
        options = keys["fsdp"]
        options = options.split() if isinstance(options, str) else [str(o) for o in options]
        out = {"strategy": "fsdp"}
        sharding = next((o for o in options if o in ("full_shard", "shard_grad_op", "hybrid_shard")), None)
        if sharding:
            out["fsdp_sharding"] = sharding
        if "offload" in options:
            out["cpu_offload"] = True
        return out
    path = keys.get("deepspeed")
    if not path:
        return {}
    path = str(path)
    try:
        zero = json.loads(Path(path).read_text(encoding="utf-8")).get("zero_optimization", {})
        stage, offload = int(zero.get("stage", 0)), zero.get("offload_optimizer", {}).get("device") == "cpu"
    except (OSError, ValueError, AttributeError):
        match = re.search(r"z(\d)", Path(path).name)
        stage, offload = (int(match.group(1)) if match else 0), "offload" in path
        checks.append(f"deepspeed {path}: not readable here; ZeRO stage {stage} taken from its name")
    if stage < 2:
        return {"strategy": "ddp"}
    return {"strategy": "deepspeed", "zero_stage": stage, "cpu_offload": offload}


def words(choice: dict) -> str:
    if not choice or choice["strategy"] == "ddp":
        return "plain data parallel"
    if choice["strategy"] == "fsdp":
        return "FSDP" + (f" {choice['fsdp_sharding']}" if "fsdp_sharding" in choice else "") + (
            " with CPU offload" if choice.get("cpu_offload") else "")
    return f"DeepSpeed ZeRO-{choice['zero_stage']}" + (" with CPU offload" if choice.get("cpu_offload") else "")


def distributed(stages: list[StageDraft], checks: list[str]) -> list[str]:
    """[distributed]: the strongest of the configs' own strategies (the one that shards most: the others
    fit where it fits), each stage whose config chose otherwise named; and ddp_timeout."""
    choices = {s.name: strategy(s.config, checks) for s in stages}
    rank = lambda c: (0 if not c or c["strategy"] == "ddp" else 1 if c["strategy"] == "deepspeed" and c["zero_stage"] == 2
                      else 2, bool(c.get("cpu_offload")))  # noqa: E731
    chosen = max(choices.values(), key=rank)
    timeouts = [math.ceil(float(s.config.keys["ddp_timeout"]) / 60) for s in stages if s.config.keys.get("ddp_timeout")]
    lines = []
    if chosen:
        lines = [f"strategy = {toml_value(chosen['strategy'])}"] + assignments({k: v for k, v in chosen.items()
                                                                                  if k != "strategy"})
        for stage in stages:
            if words(choices[stage.name]) != words(chosen):
                checks.append(f"stage {stage.name} ({stage.config.path.name}): {words(choices[stage.name])} in its "
                              f"config, {words(chosen)} here: the recipe's [distributed] applies to every stage")
        sharded_head = chosen["strategy"] == "fsdp" or chosen.get("zero_stage") == 3
        if sharded_head:  # the chunked loss reads the output layer outside its forward: a sharded one is empty
            for draft in stages:
                draft.settings["loss"] = "standard"
            checks.append(f"{words(chosen)}: the stages use loss = \"standard\" (full logits, as LLaMA-Factory "
                          "computes it); the chunked loss cannot read a sharded output layer")
    if timeouts:
        lines.append(f"timeout_minutes = {max(timeouts)}")
    return ["", "[distributed]", *lines] if lines else []


def stage_lines(stage: StageDraft) -> list[str]:
    lines = ["[[stages]]", f"name = {toml_value(stage.name)}", f"kind = {toml_value(stage.kind)}",
             f"base = {toml_value(stage.base)}"]
    if stage.chaining:
        lines.append(f"chaining = {toml_value(stage.chaining)}")
    lines += assignments(stage.settings)
    lines += comment_lines([f"from {stage.config.path}:", *stage.comments]) if stage.comments else []
    if stage.quantization is not None:
        lines += ["", "[stages.quantization]", *assignments(stage.quantization)]
    for table, sources in (("data", stage.data), ("eval_data", stage.eval_data)):
        for source in sources:
            lines += ["", f"[[stages.{table}]]", *assignments(source)]
    return lines


def name_stages(stages: list[StageDraft]) -> None:
    taken: set[str] = {"model"}
    for stage in stages:
        output = stage.config.path_of("output_dir")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(output).name if output else "").lstrip("-._") or stage.kind
        candidate, number = name, 2
        while candidate in taken:
            candidate, number = f"{name}-{number}", number + 1
        stage.name = candidate
        taken.add(candidate)
