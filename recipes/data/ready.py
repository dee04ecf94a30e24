"""Is a stage's data prepared already? Decided without torch or transformers.

The token store's key needs the tokenizer loaded (its serialization and chat template), and loading
transformers to learn that nothing is to be done is most of a ready ``recipes prepare``'s time. So
after a stage's data is prepared (or found prepared), a small record is written under
``$RECIPES_CACHE/store/ready``, keyed by what the key's inputs come from, read from disk: the model
folder's small files (tokenizer files, configs, chat template), the stage's settings, its sources
(format, provider version, options, the files' contents) and the versions of recipes, the plugins,
transformers and tokenizers. The record names the stores and the layout it found and the lines the
full path printed. A later ``recipes prepare`` that finds a record for every stage, with each of
those folders still complete, prints the lines and is done.

The record's key is deliberately wider than the store's (any setting of the stage, any small file of
the model folder): a change it covers that does not change the tokens only sends the command down
the full path once, which finds the stores and writes a new record.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from recipes.hashing import digest, file_sha256

SMALL_FILES = (".json", ".txt", ".model", ".tiktoken", ".jinja", ".py")


def model_identity(model_path: str) -> dict | None:
    """The model's files that decide its tokenizer, by content; None where only the full path knows
    (a hub id resolved through the HF cache)."""
    if model_path.startswith("bundled:"):
        from recipes.family import family

        bundled = family().bundled_models.get(model_path.removeprefix("bundled:"))
        return None if bundled is None else {"bundled": model_path, "build": bundled.build_id}
    folder = Path(model_path).expanduser()
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in SMALL_FILES
                   and not p.name.startswith(".") and p.stat().st_size < 50 << 20)
    return {"folder": str(folder.resolve()), "files": {str(p.relative_to(folder)): file_sha256(p) for p in files}}


def _sources(sources) -> list:
    return [{"name": s.name, "format": s.format.name, "options": s.options.model_dump(mode="json"),
             "mix": s.mix_json(), **s.cleaning_json(), "files": [file_sha256(Path(f)) for f in s.files]} for s in sources]


def record_key(plan, stage, registry) -> str | None:
    from recipes import __version__
    from recipes.data.store import STORE_VERSION
    from recipes.versions import versions

    model = model_identity(plan.model_path)
    if model is None:
        return None
    return digest({"model": model, "revision": plan.revision, "trust_remote_code": plan.trust_remote_code,
                   "libraries": versions(registry), "recipes": __version__, "store": STORE_VERSION, "stage": stage.name, "kind": stage.kind,
                   "settings": stage.settings.model_dump(mode="json"), "sources": _sources(stage.sources),
                   "eval_sources": _sources(stage.eval_sources), "decontaminate": stage.decontaminate,
                   # what decontamination compares against: every stage's evaluation sets and the benchmarks
                   "references": stage.references.key() if stage.references else None})


def _folder() -> Path:
    from recipes.data.prepare import store_root

    return store_root() / "ready"


def remembered(plan, stage, registry) -> dict | None:
    """The record of this stage's prepared data, if there is one and every folder it names is complete."""
    key = record_key(plan, stage, registry)
    if key is None:
        return None
    try:
        record = json.loads((_folder() / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None
    markers = [Path(m) for m in record.get("markers", [])]
    if not markers or not all(m.is_file() for m in markers):
        return None
    return record


def remember(plan, stage, registry, lines: list[str], result: dict, markers: list[Path]) -> None:
    """Write the record (atomically: a reader never sees half of it)."""
    key = record_key(plan, stage, registry)
    if key is None:
        return
    folder = _folder()
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{key}.{os.getpid()}"
    temporary.write_text(json.dumps({"lines": lines, "result": result, "markers": [str(m) for m in markers]}))
    os.replace(temporary, folder / f"{key}.json")
