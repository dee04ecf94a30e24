"""Fingerprints: what determines a stage's result, hashed, so that a re-run knows what it can keep.

A stage's fingerprint covers its resolved settings (less the operational ones: logging, checkpoint
cadence, guards), its kind, its base (the base stage's fingerprint, or the model's files), its data
files' contents with their formats and options, the quantization backend and options, and the
versions of recipes, the plugins and the libraries that compute the result. The parts are kept
apart in the manifest so that a re-run can say *what* changed.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from recipes.config.schema import OPERATIONAL_SETTINGS
from recipes.hashing import digest, file_sha256

LIBRARIES = ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "safetensors", "tokenizers")


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


def versions(registry) -> dict:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found.update({f"plugin:{name}": info.version for name, info in registry.info.items()})
    return found


def stage_parts(plan, stage, base_fingerprint: str, registry) -> dict:
    """The inputs of a stage, as stored in the manifest (small values, file digests)."""
    settings = {k: v for k, v in stage.settings.as_dict().items() if k not in OPERATIONAL_SETTINGS}
    data = [{"format": source.format.name, "options": source.options.model_dump(mode="json"),
             "files": {str(f): file_sha256(f) for f in source.files}, **source.mix_json()} for source in stage.sources]
    return {
        "kind": stage.kind,
        "settings": settings,
        "base": {"name": stage.base, "fingerprint": base_fingerprint},
        "data": data,
        "quantization": {"backend": plan.backend.name, **plan.backend_options.model_dump(mode="json")},
        "versions": versions(registry),
    }


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
    if old.get("data") != new["data"]:
        old_files = {f: h for source in old.get("data", []) for f, h in source["files"].items()}
        new_files = {f: h for source in new["data"] for f, h in source["files"].items()}
        files = sorted(f for f in set(old_files) | set(new_files) if old_files.get(f) != new_files.get(f))
        reasons.append("data changed: " + (", ".join(Path(f).name for f in files[:3]) if files
                                           else "formats or options"))
    for part, label in (("kind", "kind"), ("quantization", "quantization"), ("versions", "library versions")):
        if old.get(part) != new[part]:
            if part == "versions":
                diff = [f"{k} {old.get(part, {}).get(k)} -> {v}" for k, v in new[part].items()
                        if old.get(part, {}).get(k) != v]
                reasons.append("library versions changed: " + ", ".join(diff[:3]))
            else:
                reasons.append(f"{label} changed")
    return "; ".join(reasons) or "its inputs changed"
