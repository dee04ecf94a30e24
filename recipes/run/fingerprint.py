"""Fingerprints: what determines a stage's result, hashed, so that a re-run knows what it can keep.

A stage's fingerprint covers its resolved settings (less the operational ones: logging, checkpoint
cadence, guards), its kind, its base (the base stage's fingerprint, or the model's files), its data
and evaluation files' contents with their formats and options, the precision it trains in on this
machine (``auto`` resolved), the number of processes (the effective batch), the chat-template
fallback (a tokenizer without a template renders conversations with the family's), the quantization
backend and options, and the versions of recipes, the plugins and the libraries that compute the
result. The parts are kept apart in the manifest so that a re-run can say *what* changed. No torch
on a machine without a GPU (a finished plan is decided without it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from recipes.config.schema import OPERATIONAL_SETTINGS
from recipes.hashing import digest, file_sha256
from recipes.versions import versions
from recipes.training import distributed



def model_fingerprint(model_path: str, revision: str | None) -> str:
    """The starting model's identity, cheap even for 15 GB of weights: config and tokenizer files by
    content; weight files by their content-addressed blob name where they live in the HF cache, else
    by size and modification time."""
    if model_path.startswith("bundled:"):
        from recipes.family import family

        bundled = family().bundled_models[model_path.removeprefix("bundled:")]
        return digest({"bundled": model_path, "build": bundled.build_id})
    folder = Path(model_path)
    entries = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        name = str(file.relative_to(folder))
        if file.suffix in (".json", ".txt", ".model", ".tiktoken", ".jinja", ".py") and file.stat().st_size < 50 << 20:
            entries[name] = file_sha256(file)
        elif file.is_symlink() and "blobs" in file.resolve().parts:
            entries[name] = file.resolve().name
        else:
            stat = file.stat()
            entries[name] = [stat.st_size, stat.st_mtime_ns]
    return digest({"files": entries, "revision": revision})


def stage_parts(plan, stage, base_fingerprint: str, registry, base_folder: str | Path | None) -> dict:
    """The inputs of a stage, as stored in the manifest (small values, file digests). ``base_folder``
    is the model folder the stage loads its tokenizer from (None: not known yet)."""
    settings = {k: v for k, v in stage.settings.as_dict().items() if k not in OPERATIONAL_SETTINGS}
    return {
        "kind": stage.kind,
        "settings": settings,
        **_kind_options(stage),
        "base": {"name": stage.base, "fingerprint": base_fingerprint},
        "data": _sources(stage.sources),
        "eval_data": _sources(stage.eval_sources),
        **({} if getattr(stage, "decontaminate", True) else {"decontaminate": False}),
        "precision": resolved_precision(stage.settings.precision),
        "world_size": distributed.world_size(),
        "chat_template": chat_template_fallback(stage, base_folder),
        "quantization": stage.quantization,
        "versions": versions(registry),
    }


def _kind_options(stage) -> dict:
    """The stage kind's own settings (a kind without any adds nothing, so earlier runs keep their
    fingerprints)."""
    options = stage.kind_options.model_dump(mode="json") if stage.kind_options is not None else {}
    return {"kind_options": options} if options else {}


def _sources(sources: list) -> list:
    return [{"format": source.format.name, "options": source.options.model_dump(mode="json"),
             "files": {str(f): file_sha256(f) for f in source.files}, **source.mix_json(), **source.cleaning_json()}
            for source in sources]


def resolved_precision(requested: str) -> str:
    """The precision a stage trains in here, as ``recipes.training.precision.pick_precision`` resolves
    it: what the recipe asks, or for ``auto`` fp32 where no GPU is visible (decided without torch),
    else what torch says of the GPU."""
    if requested != "auto":
        return requested
    if distributed.visible_gpus() == 0 and not Path("/dev/kfd").exists():  # no NVIDIA GPU, no ROCm
        return "fp32"
    from recipes.training.precision import pick_precision

    return pick_precision(requested)[0]


def chat_template_fallback(stage, base_folder: str | Path | None) -> dict | None:
    """Where the stage renders conversations with a tokenizer that has no chat template, the family's
    template it falls back to (its name and digest); None where the tokenizer's own is used or the
    stage renders no conversation."""
    chat = stage.kind_provider.chat or any(
        fmt.yields == "conversations" for fmt, _, _ in [*stage.sources, *stage.eval_sources])
    if not chat or base_folder is None or has_chat_template(Path(base_folder)):
        return None
    from recipes.family import family

    return {"family": family().name, "sha256": hashlib.sha256(family().chat_template().encode()).hexdigest()}


def has_chat_template(folder: Path) -> bool:
    """Whether the tokenizer saved in ``folder`` has a chat template (where transformers looks:
    chat_template.jinja, additional_chat_templates/, tokenizer_config.json's ``chat_template``)."""
    if (folder / "chat_template.jinja").is_file() or any((folder / "additional_chat_templates").glob("*.jinja")):
        return True
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("chat_template"))


def why_changed(old: dict, new: dict) -> str:
    """A short account of what differs between two stages' parts."""
    reasons = []
    if old.get("base") != new["base"]:
        reasons.append(f"its base {new['base']['name']!r} changed")
    old_settings = old.get("settings", {})
    changed = sorted(k for k in set(old_settings) | set(new["settings"]) if old_settings.get(k) != new["settings"].get(k))
    if changed:
        reasons.append("settings changed: " + ", ".join(
            f"{k} {old_settings.get(k)!r} -> {new['settings'].get(k)!r}" for k in changed[:4])
            + (" ..." if len(changed) > 4 else ""))
    for part, label in (("data", "data"), ("eval_data", "eval data")):
        if part in old and old[part] != new[part]:
            reasons.append(f"{label} changed: " + _files_changed(old[part], new[part]))
    for part, label in (("precision", "precision"), ("world_size", "processes")):
        if part in old and old[part] != new[part]:
            reasons.append(f"{label} changed: {old[part]} -> {new[part]}")
    if "chat_template" in old and old["chat_template"] != new["chat_template"]:
        shown = lambda t: f"the {t['family']} family's (the tokenizer has none)" if t else "the tokenizer's own"
        reasons.append(f"chat template changed: {shown(old['chat_template'])} -> {shown(new['chat_template'])}")
    for part, label in (("kind", "kind"), ("quantization", "quantization"), ("versions", "library versions")):
        if old.get(part) != new[part]:
            if part == "versions":
                diff = [f"{k} {old.get(part, {}).get(k)} -> {v}" for k, v in new[part].items()
                        if old.get(part, {}).get(k) != v]
                reasons.append("library versions changed: " + ", ".join(diff[:3]))
            else:
                reasons.append(f"{label} changed")
    unrecorded = [part for part in new if part not in old]
    if old and unrecorded:
        reasons.append("recorded before the fingerprint covered " + ", ".join(unrecorded))
    return "; ".join(reasons) or "its inputs changed"


def _files_changed(old: list, new: list) -> str:
    old_files = {f: h for source in old for f, h in source["files"].items()}
    new_files = {f: h for source in new for f, h in source["files"].items()}
    files = sorted(f for f in set(old_files) | set(new_files) if old_files.get(f) != new_files.get(f))
    return ", ".join(Path(f).name for f in files[:3]) if files else "formats or options"
