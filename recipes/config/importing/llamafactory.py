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
from pathlib import Path

from recipes.config.importing.llamafactory_keys import (CHECK_BY_HAND, FRACTIONAL_STEPS, HANDLED, LEFT_OUT,
                                                        NO_DEFAULT, NOT_IN_PRETRAINING, NOT_TRAINING, PISSA_ITERATIONS,
                                                        SECRETS, SETTINGS, V1_KEYS)
from recipes.config.importing import llamafactory_recipe as whole
from recipes.config.importing.llamafactory_recipe import Config, Imported, StageDraft
from recipes.config.importing.toml_out import comment_lines, toml_value
from recipes.errors import Problem, RecipeError

KINDS = {"pt": "pretrain", "sft": "sft"}
INTERLEAVE = ("interleave_under", "interleave_over", "interleave_once")
# LLaMA-Factory's flash_attn -> our attn_implementation (None: keep ours, "auto")
ATTENTION = {"disabled": "eager", "sdpa": "sdpa", "fa2": "flash_attention_2", "fa3": "flash_attention_2", "auto": None}
# a key whose name says it holds a credential is never copied, known to the tables or not
SECRET_NAME = re.compile(r"token|secret|api_key|password", re.IGNORECASE)


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
    for config in configs:
        _refuse_other_files(config)
    training = [c for c in configs if "export_dir" not in c.keys]
    exports = [c for c in configs if "export_dir" in c.keys]
    if not training:
        raise RecipeError(Problem("no training config among them (one with stage: pt or sft)", file=str(paths[0])))
    checks: list[str] = []
    stages = [_draft(c, out, dataset_dir, checks) for c in training]
    whole.name_stages(stages)
    _chain(stages, exports, checks)
    stages = _ordered(stages)
    model = whole.model(stages)
    head = [f"name = {toml_value(out.stem)}",
            f"description = {toml_value('Imported from LLaMA-Factory: ' + ', '.join(str(p) for p in paths))}"]
    callbacks = whole.callbacks(stages, checks)
    if callbacks is not None:
        head.append(f"callbacks = {toml_value(callbacks)}")
    head += ["", "[model]", f"path = {toml_value(model)}"]
    revision = whole.revision(stages, exports)
    if revision is not None:
        head.append(f"revision = {toml_value(revision)}")
    if any(s.config.keys.get("trust_remote_code") for s in stages):
        head.append("trust_remote_code = true")
    checks.insert(0, whole.model_check(model))
    distributed = whole.distributed(stages, checks)
    lines = (head + _export_comments(exports, stages) + whole.quantization(stages, checks, "fsdp" in "".join(distributed))
             + distributed)
    for stage in stages:
        lines += ["", *whole.stage_lines(stage)]
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
    draft.settings = _settings(config, draft.kind, draft.comments, checks)
    info = _dataset_info(config, dataset_dir)
    options = {k: True for k in ("train_on_prompt", "mask_history") if keys.get(k) and draft.kind == "sft"}
    draft.data = _sources(config, "dataset", info, out, options)
    draft.eval_data = _sources(config, "eval_dataset", info, out, options) if keys.get("eval_dataset") else []
    if not draft.data:
        raise RecipeError(config.problem("dataset", "no dataset: name the LLaMA-Factory data set(s) to train on"))
    _max_samples(draft, checks)
    _mix(draft, checks)
    draft.comments += _left_out(config, draft.kind, checks)
    return draft


def _refuse_other_files(config: Config) -> None:
    """A file that is not a LLaMA-Factory training or merge config is named for what it is."""
    keys = config.keys
    if "model_name_or_path" not in keys and any(k in keys for k in V1_KEYS):
        first = next(k for k in V1_KEYS if k in keys)
        raise RecipeError(config.problem(first, "a LLaMA-Factory v1 config (model:, peft_config:, train_dataset:, "
                                         "...); the importer reads the v0 layout of examples/train_lora: write it "
                                         "as one (model_name_or_path, stage, finetuning_type: lora, dataset, "
                                         "output_dir) and import that"))
    if "dataset" in keys or "export_dir" in keys:
        return
    for markers, what in NOT_TRAINING:
        found = next((k for k in markers if keys.get(k) not in (None, False)), None)
        if found is not None:
            raise RecipeError(config.problem(found, what))


def _settings(config: Config, kind: str, comments: list[str], checks: list[str]) -> dict:
    keys, out, share = config.keys, {}, None
    for key, (name, default) in SETTINGS.items():
        value = keys.get(key, default)
        if key == "lora_alpha" and value is None:
            value = 2 * int(keys.get("lora_rank", 8))  # LLaMA-Factory: lora_rank * 2
        if value is NO_DEFAULT or value is None or (key == "max_steps" and int(value) <= 0):
            continue
        if _is_share(value) and key in (*FRACTIONAL_STEPS, "warmup_steps"):
            # transformers reads a step count below 1 as a share of all steps; a recipe takes a count
            if key == "warmup_steps":
                share = float(value)
                comments.append(f"warmup_steps = {_shown(value)}: a share of all steps, written as warmup_ratio")
                continue
            comments.append(f"{key} = {_shown(value)}: left out; a share of all steps in transformers, while the "
                            "recipe takes a step count")
            checks.append(f"{config.path}: {key} = {_shown(value)} is a share of all steps; left out: set "
                          f"{key} to a step count in the recipe")
            continue
        out[name] = _coerce(config, key, value)
    if "warmup_steps" in out and "warmup_ratio" not in keys:
        out.pop("warmup_ratio", None)
    if share is not None:  # a fractional warmup_steps is a share, which wins over warmup_ratio as steps do
        out["warmup_ratio"] = share
    if out.get("lr_scheduler_type") == "cosine_with_min_lr":
        out["lr_scheduler_type"] = "cosine"
        comments.append("lr_scheduler_type = \"cosine_with_min_lr\": written as cosine; a recipe cannot pass its "
                        "min_lr / min_lr_rate")
        checks.append(f"{config.path}: lr_scheduler_type cosine_with_min_lr is written as cosine (it decays to 0, "
                      "not to min_lr): a recipe cannot pass min_lr / min_lr_rate")
    attention = str(keys.get("flash_attn", "auto")).lower()
    if attention not in ATTENTION:
        raise RecipeError(config.problem("flash_attn", f"flash_attn {attention!r}: expected one of "
                                         f"{', '.join(ATTENTION)}"))
    if ATTENTION[attention] is not None:
        out["attn_implementation"] = ATTENTION[attention]
    if attention == "fa3":
        checks.append(f"{config.path}: flash_attn fa3 is written as flash_attention_2 (transformers' FlashAttention "
                      "2 kernel); recipes has no FlashAttention 3")
    if keys.get("enable_liger_kernel"):
        _liger(config, out, comments, checks)
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


def _is_share(value) -> bool:
    try:
        return not isinstance(value, bool) and 0 < float(value) < 1
    except (TypeError, ValueError):
        return False


def _liger(config: Config, out: dict, comments: list[str], checks: list[str]) -> None:
    from recipes.plugins.registry import get_registry

    if "liger" in get_registry().losses:
        out["loss"] = "liger"
        comments.append("enable_liger_kernel = true: loss = \"liger\" (Liger's fused linear cross-entropy); "
                        "Liger's other kernels (RMSNorm, RoPE, SwiGLU) have no equivalent")
        return
    comments.append("enable_liger_kernel = true: left out; the recipes-liger plugin (loss = \"liger\") is not "
                    "installed")
    checks.append(f"{config.path}: enable_liger_kernel: install the recipes-liger plugin (pip install -e "
                  "plugins/recipes-liger) and set loss = \"liger\" for Liger's fused cross-entropy")


def _max_samples(draft: StageDraft, checks: list[str]) -> None:
    """LLaMA-Factory's max_samples caps each data set (training and evaluation) to its first N records."""
    config, value = draft.config, draft.config.keys.get("max_samples")
    if value is None:
        return
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise RecipeError(config.problem("max_samples", f"max_samples: {value!r} is not a number")) from None
    if draft.kind == "pretrain":  # LLaMA-Factory counts documents before joining them; recipes counts blocks
        draft.comments.append(f"max_samples = {count}: left out; LLaMA-Factory counts documents before they are "
                              "joined into blocks, recipes' max_samples counts cutoff_len blocks")
        checks.append(f"{config.path}: max_samples = {count} is left out (pre-training): recipes' max_samples counts "
                      "cutoff_len blocks, not documents; set it on the sources if you want a cap")
        return
    for source in draft.data + draft.eval_data:
        source["max_samples"] = count


def _mix(draft: StageDraft, checks: list[str]) -> None:
    """mix_strategy and interleave_probs as each training source's weight."""
    config = draft.config
    strategy = config.keys.get("mix_strategy", "concat")
    probs = config.keys.get("interleave_probs")
    if strategy == "concat":
        if probs is not None:
            draft.comments.append(f"interleave_probs = {_shown(probs)}: left out; LLaMA-Factory ignores it with "
                                  "mix_strategy concat (the sets are concatenated)")
        return
    if strategy not in INTERLEAVE:
        raise RecipeError(config.problem("mix_strategy", f"mix_strategy {strategy!r}: expected concat or one of "
                                         f"{', '.join(INTERLEAVE)}"))
    if probs is None:
        weights = [1.0] * len(draft.data)
    else:
        try:
            weights = [float(p) for p in (probs.split(",") if isinstance(probs, str) else probs)]
        except (TypeError, ValueError):
            raise RecipeError(config.problem("interleave_probs", f"interleave_probs {probs!r}: give one number "
                                             "per data set, e.g. 0.9,0.1")) from None
        if len(weights) != len(draft.data) or any(w <= 0 for w in weights):
            raise RecipeError(config.problem("interleave_probs", f"interleave_probs gives {len(weights)} "
                                             f"probabilities for {len(draft.data)} data sets: give one above 0 per "
                                             "data set, in the order of dataset"))
    for source, weight in zip(draft.data, weights):
        source["weight"] = weight
    shares = ", ".join(f"{s['dataset']} {w / sum(weights):.0%}" for s, w in zip(draft.data, weights))
    epoch = {"interleave_under": "LLaMA-Factory stops at the first data set that runs out",
             "interleave_over": "LLaMA-Factory goes on until the last data set runs out (set main = true on the "
                                "source that runs out last to match)",
             "interleave_once": "LLaMA-Factory draws without replacement"}[strategy]
    checks.append(f"{config.path}: mix_strategy {strategy} is written as weights ({shares}): LLaMA-Factory's "
                  "probabilities are shares of the examples drawn, recipes' weights are shares of the training "
                  f"tokens; an epoch is one pass over the source with the largest weight ({epoch})")


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
        if key in SECRETS or SECRET_NAME.search(key):
            why = SECRETS.get(key, "a credential")
            comments.append(f"{key}: left out, its value not copied (a secret); {why}")
            checks.append(f"{config.path}: {key} is left out; its value is not written anywhere (a secret)")
            continue
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
