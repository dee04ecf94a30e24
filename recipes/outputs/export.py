"""``recipes export``: a finished stage's result as a folder that works on its own.

``--merged``: an HF model folder (safetensors, sharded, in the dtype asked for) with the tokenizer
and chat template, loadable by ``AutoModelForCausalLM.from_pretrained`` and by inference servers
that read HF folders. ``--adapter``: the stage's LoRA adapter (PEFT) with the tokenizer, whose
``adapter_config.json`` names a base that loads: the model the stage trained on, as an absolute path.

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

DTYPES = tuple(TORCH_DTYPE_NAMES)
SHARD_UNITS = {"GIB": 2**30, "MIB": 2**20, "KIB": 2**10, "GB": 10**9, "MB": 10**6, "KB": 10**3}
# Written into tokenizer_config.json by a tokenizer loaded offline: where it came from, not what it is.
LOAD_ONLY_KEYS = ("is_local", "local_files_only")


@dataclass(frozen=True)
class ExportRequest:
    """A checked export: what to read, what to write."""

    run_dir: Path
    stage: str
    kind: str  # "pretrain" or "sft"
    base: str  # "model" or an earlier stage
    what: str  # "merged" or "adapter"
    source: Path
    to: Path
    dtype: str | None  # None: as the stage saved it
    max_shard_bytes: int
    model_path: str  # the recipe's model, as the run resolved it


def parse_shard_size(text: str) -> int:
    """'5GB', '500MB', '2GiB' -> bytes (decimal units are powers of 10, as in transformers)."""
    found = re.fullmatch(r"\s*(\d+)\s*([KMG]I?B)\s*", text, flags=re.IGNORECASE)
    if not found or int(found.group(1)) == 0:
        raise RecipeError(f"--max-shard-size {text!r}: give a size such as 5GB, 500MB or 2GiB")
    return int(found.group(1)) * SHARD_UNITS[found.group(2).upper()]


def export_request(run_dir: Path, to: Path | None, stage: str | None = None, what: str = "merged",
                   dtype: str | None = None, max_shard_size: str = "5GB", force: bool = False) -> ExportRequest:
    """Check everything without torch: the run folder, its manifest, the stage (default: the last
    one), that it is done and its published files are intact, and the destination."""
    problems = []
    if to is None:
        problems.append("--to DIR is required: the folder to write the export to")
    if dtype is not None and dtype not in DTYPES:
        problems.append(f"--dtype {dtype!r}: one of {', '.join(DTYPES)}; {did_you_mean(dtype, list(DTYPES))}")
    if what == "adapter" and (dtype is not None or max_shard_size != "5GB"):
        problems.append("--dtype and --max-shard-size apply to --merged exports; an adapter is copied as trained")
    if problems:
        raise RecipeError(problems)
    shard_bytes = parse_shard_size(max_shard_size)

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
    recorded = (entry.get("outputs") or {}).get(what)
    if not recorded:
        raise RecipeError(f"stage {name!r}: the manifest records no {what} output; run the stage again "
                          f"(recipes run RECIPE --restart {name})")
    source = inside(run_dir, recorded["path"])
    if not matches(source, recorded["files"]):
        raise RecipeError(f"{source}: its files changed since the stage published them (see {MANIFEST_NAME}); "
                          f"run the stage again (recipes run RECIPE --restart {name})")

    kind, base = planned[name]
    return ExportRequest(run_dir, name, kind, base, what, source, to, dtype, shard_bytes,
                         recorded_recipe(run_dir).get("model_path", ""))


def export(request: ExportRequest) -> list[str]:
    """Write the export; return what to tell the user, a line each."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    with publishing(request.to) as (side,):
        if request.what == "merged":
            notes = _write_merged(request, side)
        else:
            notes = _write_adapter(request, side)
    return [f"exported {request.what} of stage {request.stage!r} to {request.to}", *notes]


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
