"""What a recipe's model is, read from its config.json without torch or transformers.

`recipes validate` checks `cutoff_len` against the model's context and LoRA targets against its
module names. The config comes from, in order: the bundled tiny model's build settings, a local
model folder, the local Hugging Face cache (read by hand: importing huggingface_hub costs 0.3 s of
the 0.5 s that validation may take), or the copy shipped in ``qwen_recipes/configs`` for known
Qwen hub ids. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

BUNDLED_PREFIX = "bundled:"


@dataclass
class ModelInfo:
    config: dict
    source: str  # where the config was read, for messages

    @property
    def model_type(self) -> str | None:
        return self.config.get("model_type")

    @property
    def context(self) -> int | None:
        """The longest sequence the model takes. Qwen v1's is ``seq_length`` (8192 for Qwen-7B: what it
        was trained on); its ``max_position_embeddings`` (32768) is not a trained context."""
        keys = ("max_position_embeddings", "seq_length", "n_positions")
        if self.model_type == "qwen":
            keys = ("seq_length", "max_position_embeddings")
        for key in keys:
            if isinstance(self.config.get(key), int):
                return self.config[key]
        return None

    @property
    def dtype(self) -> str | None:
        return self.config.get("torch_dtype") or self.config.get("dtype")


def is_hub_id(path: str) -> bool:
    """Whether ``path`` has the form of a Hugging Face hub id, ``org/name`` (what `hf download` takes)."""
    import re

    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9_]", path) is not None and ".." not in path


def local_model_folder(path: str, base_dir: Path) -> Path | None:
    """The folder a model path names, if it is local (relative paths are relative to the recipe)."""
    if path.startswith(BUNDLED_PREFIX):
        return None
    candidate = Path(path).expanduser()
    candidate = candidate if candidate.is_absolute() else base_dir / candidate
    if path.startswith((".", "/", "~")) or candidate.exists():
        return candidate
    return None


def model_info(path: str, revision: str | None, base_dir: Path) -> ModelInfo | None:
    """The model's config, or None where it cannot be known without a download."""
    if path.startswith(BUNDLED_PREFIX):
        from recipes.family import family

        bundled = family().bundled_models.get(path[len(BUNDLED_PREFIX):])
        return ModelInfo(dict(bundled.config), f"the bundled model {bundled.name}") if bundled else None
    folder = local_model_folder(path, base_dir)
    if folder is not None:
        return _read(folder / "config.json")
    cached = hf_cache_file(path, "config.json", revision)
    if cached is not None:
        return _read(cached)
    from recipes.family import family

    known = family().known_configs
    if path in known:
        return _read(known[path], f"the shipped config of {path}")
    return None


def _read(file: Path, source: str | None = None) -> ModelInfo | None:
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return ModelInfo(config, source or str(file)) if isinstance(config, dict) else None


def hf_cache_file(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """A file of a hub model in the local HF cache (the layout huggingface_hub writes:
    models--ORG--NAME/refs/REV holds a commit, snapshots/COMMIT/FILE the file)."""
    if repo_id.count("/") != 1:
        return None
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub")
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    revision = revision or "main"
    ref = repo / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    file = repo / "snapshots" / commit / filename
    return file if file.is_file() else None
