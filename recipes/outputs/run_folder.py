"""Reading a run folder after (or during) a run: the recipe it recorded and its stages in order."""

from __future__ import annotations

import json
from pathlib import Path


def recorded_recipe(run_dir: Path) -> dict:
    """``recipe.json`` as the run wrote it ({} when absent or unreadable)."""
    path = Path(run_dir) / "recipe.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def stage_order(run_dir: Path, manifest_stages: dict) -> list[tuple[str, str, str]]:
    """[(stage, kind, base)] in the recipe's order (recipe.json), then any stage only the manifest
    knows, in its order."""
    from recipes.config.schema import MODEL_REF

    out = {s["name"]: (s["name"], s.get("kind", ""), s.get("base", MODEL_REF))
           for s in recorded_recipe(run_dir).get("stages", []) if isinstance(s, dict) and "name" in s}
    for name, entry in manifest_stages.items():
        parts = entry.get("parts") or {}
        out.setdefault(name, (name, parts.get("kind", ""), (parts.get("base") or {}).get("name", MODEL_REF)))
    return list(out.values())
