"""Where recipes keeps what it builds once and reuses: ``$RECIPES_CACHE``, else
``$XDG_CACHE_HOME/qwen-recipes``, else ``~/.cache/qwen-recipes`` (bundled models, tokenized data)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    root = os.environ.get("RECIPES_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "qwen-recipes"
