"""What the recipes-trl tests share (not a conftest.py: run beside the host's tests, a second module named
conftest would shadow theirs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

LF_DATA = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "lf_data"  # shapes of LLaMA-Factory's data


@pytest.fixture(scope="module", autouse=True)
def caches(tmp_path_factory):
    """No network; the session's caches when the host's tests set them (the tiny model is built once)."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_HOME", "RECIPES_CACHE")}
    root = tmp_path_factory.mktemp("trl_caches")
    os.environ.update(HF_HUB_OFFLINE="1")
    os.environ.setdefault("HF_HOME", str(root / "hf"))
    os.environ.setdefault("RECIPES_CACHE", str(root / "recipes"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
