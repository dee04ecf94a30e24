"""``recipes export``: a finished stage's result as a folder that works on its own.

``--merged``: an HF model folder (safetensors, sharded, in the dtype asked for) with the tokenizer
and chat template, loadable by ``AutoModelForCausalLM.from_pretrained`` and by inference servers
that read HF folders. ``--adapter``: the stage's LoRA adapter (PEFT) with the tokenizer, whose
``adapter_config.json`` names a base that loads: the model the stage trained on, as an absolute path.
``--ollama``: the merged folder plus an Ollama ``Modelfile`` (``recipes.outputs.modelfile``; Ollama
converts and quantizes a Qwen2 safetensors folder itself). ``--format NAME:VARIANT`` (``--gguf TYPE``
is ``--format gguf:TYPE``): an ``Exporter`` a plugin provides writes the file from the merged model,
which is written into the export folder first and removed once the exporter is done.

An export never starts on a folder that still holds bitsandbytes weights (GGUF and Ollama need plain
ones; the run's own merged folders are always plain), nor without the free disk space it needs.

After an SFT stage the exported folder stops generation at ``<|im_end|>`` everywhere a reader may
look (config.json, generation_config.json, tokenizer_config.json), as Qwen2.5-Instruct ships it:
a chat model whose eos is ``<|endoftext|>`` only never stops (LLaMA-Factory #2684, #9189).

Everything the user can get wrong is checked by ``export_request`` before torch is imported; the
folder is written aside and moved into place in one rename (``recipes.run.publish.publishing``).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from recipes.errors import RecipeError
from recipes.run.manifest import MANIFEST_NAME, Manifest, inside
from recipes.outputs.run_folder import recorded_recipe, stage_order
from recipes.run.publish import MARKER, matches, publishing
from recipes.plugins.registry import chat_kind
from recipes.config.schema import MODEL_REF, TORCH_DTYPE_NAMES, did_you_mean

WHATS = ("merged", "adapter", "ollama")
# The merged model an exporter converts from, inside the export folder while it is written
SCRATCH = ".merged-hf"
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Room kept free beyond the estimate: tokenizer files, metadata, the filesystem's own rounding
DISK_MARGIN = 1.05

DTYPES = tuple(TORCH_DTYPE_NAMES)
SHARD_UNITS = {"GIB": 2**30, "MIB": 2**20, "KIB": 2**10, "GB": 10**9, "MB": 10**6, "KB": 10**3}
# Written into tokenizer_config.json by a tokenizer loaded offline: where it came from, not what it is.
LOAD_ONLY_KEYS = ("is_local", "local_files_only")


@dataclass(frozen=True)
class ExportRequest:
    """A checked export: what to read, what to write."""

    run_dir: Path
    stage: str
    kind: str  # "pretrain", "sft" or a plugin's kind (recipes.plugins.registry.chat_kind)
    base: str  # "model" or an earlier stage
    what: str  # "merged" or "adapter"
    source: Path
    to: Path
    dtype: str | None  # None: as the stage saved it
    max_shard_bytes: int
    model_path: str  # the recipe's model, as the run resolved it
    exporter: object = None  # recipes.api.Exporter for --format/--gguf, else None
    variant: str = ""  # the exporter's variant, lower case
    system: str | None = None  # --system: the Modelfile's SYSTEM (None: the chat template's default)
    name: str = ""  # "<recipe name>-<stage>": the name `ollama create` is given


def parse_shard_size(text: str) -> int:
    """'5GB', '500MB', '2GiB' -> bytes (decimal units are powers of 10, as in transformers)."""
    found = re.fullmatch(r"\s*(\d+)\s*([KMG]I?B)\s*", text, flags=re.IGNORECASE)
    if not found or int(found.group(1)) == 0:
        raise RecipeError(f"--max-shard-size {text!r}: give a size such as 5GB, 500MB or 2GiB")
    return int(found.group(1)) * SHARD_UNITS[found.group(2).upper()]


def export_request(run_dir: Path, to: Path | None, stage: str | None = None, what: str = "merged",
                   dtype: str | None = None, max_shard_size: str = "5GB", force: bool = False,
                   target: str | None = None, system: str | None = None) -> ExportRequest:
    """Check everything without torch: the run folder, its manifest, the stage (default: the last
    one), that it is done and its published files are intact, the destination and its free disk,
    and for ``target`` ("NAME[:VARIANT]", an exporter a plugin provides) that it can be written."""
    problems = []
    if to is None:
        problems.append("--to DIR is required: the folder to write the export to")
    if dtype is not None and dtype not in DTYPES:
        problems.append(f"--dtype {dtype!r}: one of {', '.join(DTYPES)}; {did_you_mean(dtype, list(DTYPES))}")
    if what == "adapter" and (dtype is not None or max_shard_size != "5GB"):
        problems.append("--dtype and --max-shard-size apply to --merged exports; an adapter is copied as trained")
    if target is not None and what != "merged":
        problems.append(f"--format/--gguf converts the merged model: leave out --{what}")
    if system is not None and what != "ollama" and target is None:
        problems.append("--system goes into an Ollama Modelfile: use it with --ollama or --gguf")
    if problems:
        raise RecipeError(problems)
    shard_bytes = parse_shard_size(max_shard_size)
    exporter, variant = exporter_for(target) if target is not None else (None, "")

    run_dir = run_dir.expanduser().resolve()
    if not run_dir.is_dir():
        raise RecipeError(f"{run_dir}: no such run folder")
    if not (run_dir / MANIFEST_NAME).is_file():
        raise RecipeError(f"{run_dir}: not a run folder (no {MANIFEST_NAME}); give the folder `recipes run` wrote")
    to = to.expanduser().resolve()
    stages_dir = run_dir / "stages"
    if to == run_dir or to in run_dir.parents or to == stages_dir or stages_dir in to.parents:
        raise RecipeError(f"--to {to}: inside the run's stages or above the run folder; give a folder of its own")
    if to.exists() and not to.is_dir():
        raise RecipeError(f"--to {to}: exists and is not a folder")
    if to.is_dir() and any(to.iterdir()) and not force:
        raise RecipeError(f"--to {to}: exists and is not empty; give another folder, or --force to replace it")
    if to.is_dir() and any(to.iterdir()) and not (to / MARKER).is_file():
        raise RecipeError(f"--to {to}: --force replaces only a folder an earlier `recipes export` wrote (it holds "
                          f"{MARKER}); this one it did not write: give another folder, or empty it yourself")
    manifest = Manifest.load(run_dir)
    order = [(name, (kind, base)) for name, kind, base in stage_order(run_dir, manifest.data["stages"])]
    if not order:
        raise RecipeError(f"{run_dir}: the run has no stage yet; run the recipe first")
    name = stage or order[-1][0]
    planned = dict(order)
    if name not in planned:
        raise RecipeError(f"--stage {name}: no such stage in {run_dir}; {did_you_mean(name, list(planned))}")
    entry = manifest.stage(name) or {}
    status = entry.get("status", "not started")
    if status != "done":
        raise RecipeError(f"stage {name!r} is not done (status: {status}); run the recipe again to finish it, "
                          "then export")
    output = "adapter" if what == "adapter" else "merged"  # --ollama and --format start from the merged model
    recorded = (entry.get("outputs") or {}).get(output)
    if not recorded:
        raise RecipeError(f"stage {name!r}: the manifest records no {output} output; run the stage again "
                          f"(recipes run RECIPE --restart {name})")
    source = inside(run_dir, recorded["path"])
    if not matches(source, recorded["files"]):
        raise RecipeError(f"{source}: its files changed since the stage published them (see {MANIFEST_NAME}); "
                          f"run the stage again (recipes run RECIPE --restart {name})")

    kind, base = planned[name]
    recipe = recorded_recipe(run_dir)
    if what == "ollama" or exporter is not None:
        _refuse_quantized(source, name)
        if chat_kind(kind):
            _need_ollama_template()
    if exporter is not None:
        exporter.check(variant, source)
    merged_bytes = _merged_bytes(source, dtype) if what != "adapter" else _folder_bytes(source)
    extra = exporter.bytes_needed(variant, merged_bytes) if exporter is not None else 0
    check_free_disk(to, merged_bytes + extra, exporter is not None)
    label = (recipe.get("recipe") or {}).get("name") or run_dir.name
    return ExportRequest(run_dir, name, kind, base, what, source, to, dtype, shard_bytes,
                         recipe.get("model_path", ""), exporter, variant, system,
                         re.sub(r"[^a-z0-9._-]+", "-", f"{label}-{name}".lower()).strip("-"))


def exporter_for(target: str):
    """"gguf:q8_0" -> (the registered exporter "gguf", "q8_0"); without a variant, the exporter's first."""
    from recipes.plugins.registry import get_registry

    name, _, variant = target.strip().lower().partition(":")
    exporters = get_registry().exporters
    if name not in exporters:
        if name == "gguf":
            raise RecipeError("--gguf needs the recipes-gguf plugin: pip install recipes-gguf (in this repository: "
                              "pip install -e plugins/recipes-gguf)")
        known = ", ".join(sorted(exporters)) or "none installed"
        raise RecipeError(f"--format {target!r}: no such export format (installed: {known}); "
                          f"{did_you_mean(name, list(exporters))}")
    exporter = exporters[name]
    variant = variant or exporter.variants[0]
    if variant not in exporter.variants:
        raise RecipeError(f"--{name} {variant!r}: one of {', '.join(exporter.variants)}; "
                          f"{did_you_mean(variant, list(exporter.variants))}")
    return exporter, variant


def _refuse_quantized(source: Path, stage: str) -> None:
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    quantization = config.get("quantization_config")
    if quantization:
        method = quantization.get("quant_method", "quantized") if isinstance(quantization, dict) else "quantized"
        raise RecipeError(f"{source / 'config.json'}: stage {stage!r} holds {method} weights; GGUF and Ollama need "
                          "plain ones: merge first (a run's stages merge into plain weights; run the stage again "
                          "with a recipe whose [quantization] is set, it reloads the base unquantized to merge)")


def _need_ollama_template() -> None:
    from recipes.family import family

    if family().ollama_template is None:
        raise RecipeError(f"the model family {family().name!r} gives no Ollama template (ModelFamily."
                          "ollama_template): export --merged and write the Modelfile's TEMPLATE yourself")


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _merged_bytes(source: Path, dtype: str | None) -> int:
    """The size of the merged model as exported: its weights at ``dtype`` (as saved when None)."""
    weights = sum(p.stat().st_size for p in source.glob("*.safetensors"))
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    saved = DTYPE_BYTES.get(config.get("dtype") or config.get("torch_dtype") or "float32", 4)
    wanted = DTYPE_BYTES[TORCH_DTYPE_NAMES[dtype]] if dtype else saved
    return _folder_bytes(source) - weights + weights * wanted // saved


def free_bytes(folder: Path) -> int:
    """The free space of the disk ``folder`` is (or will be) on."""
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_free_disk(to: Path, needed: int, scratch: bool) -> None:
    needed = int(needed * DISK_MARGIN)
    free = free_bytes(to)
    if free < needed:
        what = "the merged model it converts from and the converted file need" if scratch else "the export needs"
        raise RecipeError(f"--to {to}: {free / 2**30:.2f} GiB free on that disk; {what} about "
                          f"{needed / 2**30:.2f} GiB: free space, or give --to on another disk")


def export(request: ExportRequest, console=None) -> list[str]:
    """Write the export; return what to tell the user, a line each (``console``: where an exporter
    prints its progress; None: nowhere)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    with publishing(request.to) as (side,):
        if request.what == "adapter":
            notes = _write_adapter(request, side)
        elif request.exporter is not None:
            notes = _write_format(request, side, console)
        else:
            notes = _write_merged(request, side)
            if request.what == "ollama":
                notes += _write_ollama(request, side)
    what = f"{request.exporter.name} {request.variant}" if request.exporter is not None else request.what
    return [f"exported {what} of stage {request.stage!r} to {request.to}", *notes]


def _modelfile(request: ExportRequest, merged: Path):
    """FROM value -> the Modelfile text for the model exported from ``merged``."""
    from transformers import AutoTokenizer

    from recipes.family import family
    from recipes.outputs.modelfile import default_system, modelfile, trained_context

    chat = chat_kind(request.kind)  # an SFT or preference stage answers as chat
    system = request.system
    if chat and system is None:
        system = default_system(AutoTokenizer.from_pretrained(merged))
    context = trained_context(recorded_recipe(request.run_dir))
    return lambda source: modelfile(source, merged, chat=chat, family=family(), system=system, context=context)


def _write_ollama(request: ExportRequest, folder: Path) -> list[str]:
    (folder / "Modelfile").write_text(_modelfile(request, folder)("."), encoding="utf-8")
    return [f"Modelfile: run it with `ollama create {request.name} -f {request.to / 'Modelfile'}` then "
            f"`ollama run {request.name}` (add -q q4_K_M to the create to quantize; Ollama converts the "
            "safetensors itself)"]


def _write_format(request: ExportRequest, folder: Path, console) -> list[str]:
    """The merged model into a scratch folder inside the export, the exporter's file from it, then
    the scratch folder removed (it never reaches the published folder)."""
    import io

    from rich.console import Console

    from recipes.plugins.hookspecs import ExportContext

    merged = folder / SCRATCH
    merged.mkdir()
    _write_merged(request, merged)
    context = ExportContext(merged, folder, request.to, request.variant, request.name, request.kind,
                            console or Console(file=io.StringIO()),
                            _modelfile(request, merged))
    notes = list(request.exporter.write(context))
    shutil.rmtree(merged)
    return notes


def _write_merged(request: ExportRequest, folder: Path) -> list[str]:
    from transformers import AutoModelForCausalLM

    from recipes.training.model import end_turns
    from recipes.training.precision import torch_dtype

    dtype = torch_dtype(request.dtype) if request.dtype else "auto"
    model = AutoModelForCausalLM.from_pretrained(request.source, dtype=dtype)
    tokenizer = _tokenizer(request)
    if chat_kind(request.kind):
        end_turns(model, tokenizer)
    model.config.use_cache = True
    model.save_pretrained(folder, max_shard_size=request.max_shard_bytes)
    _save_tokenizer(tokenizer, folder)
    written = str(next(model.parameters()).dtype).removeprefix("torch.")
    shards = sorted(folder.glob("*.safetensors"))
    return [f"dtype {written}, {len(shards)} safetensors file(s)"]


def _write_adapter(request: ExportRequest, folder: Path) -> list[str]:
    from recipes.training.model import end_turns

    tokenizer = _tokenizer(request)
    if chat_kind(request.kind):
        end_turns(None, tokenizer)
    for path in request.source.iterdir():
        if path.is_file() and path.name in ("adapter_model.safetensors", "adapter_model.bin", "README.md"):
            shutil.copy2(path, folder / path.name)
    config = json.loads((request.source / "adapter_config.json").read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base = adapter_base(request, config.get("base_model_name_or_path"))
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _save_tokenizer(tokenizer, folder)
    return [f"base_model_name_or_path: {base} (keep it, or export --merged for a folder that stands alone)"]


def adapter_base(request: ExportRequest, recorded: str | None) -> str:
    """A base the adapter loads on: the folder the stage trained on, as peft recorded it, when it is
    still there; for a stage that started from an earlier one, that stage's merged model in this run
    folder (the run may have moved); else the recipe's model when it is a hub id."""
    if recorded and Path(recorded).is_absolute() and (Path(recorded) / "config.json").is_file():
        return recorded
    if request.base != MODEL_REF:
        merged = request.run_dir / "stages" / request.base / "merged"
        if (merged / "config.json").is_file():
            return str(merged)
    elif request.model_path and not request.model_path.startswith("bundled:") \
            and not Path(request.model_path).is_absolute():
        return request.model_path  # a hub id
    raise RecipeError(f"stage {request.stage!r}: the adapter's base {recorded} no longer exists; export "
                      "--merged instead, or run the stage again")


def _tokenizer(request: ExportRequest):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(request.source)


def _save_tokenizer(tokenizer, folder: Path) -> None:
    tokenizer.save_pretrained(folder)
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    for key in LOAD_ONLY_KEYS:
        config.pop(key, None)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
