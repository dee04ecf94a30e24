"""The installed Liger loss through the real host: found by its entry point, listed by `recipes
plugins`, accepted by `recipes validate`, and refused with one line when a real run reaches it on
this CPU machine (the kernel is for CUDA GPUs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipes.cli import main
from recipes.plugins.registry import get_registry

# no conftest.py here: run beside the host's tests, a second module named conftest would shadow theirs


@pytest.fixture(scope="module", autouse=True)
def private_caches(tmp_path_factory):
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_HOME", "RECIPES_CACHE")}
    root = tmp_path_factory.mktemp("liger_caches")
    os.environ["HF_HUB_OFFLINE"] = "1"
    session = tmp_path_factory.getbasetemp().parent  # caches the host's tests made this session: kept (one tiny model)
    for key, value in (("HF_HOME", root / "hf"), ("RECIPES_CACHE", root / "recipes")):
        if not Path(os.environ.get(key, "/")).is_relative_to(session):
            os.environ[key] = str(value)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def demo_recipe(tmp_path):
    from qwen_recipes import bundled_recipes

    text = bundled_recipes()["demo"].read_text(encoding="utf-8")
    text = text.replace("cutoff_len = 256", 'cutoff_len = 64\nloss = "liger"\nmax_steps = 2')
    recipe = tmp_path / "demo_liger.toml"
    recipe.write_text(text, encoding="utf-8")
    return recipe


def test_the_loss_is_loaded_from_its_entry_point_and_listed():
    registry = get_registry()
    assert registry.info["liger"].source == "recipes-liger"
    assert "liger" in registry.losses
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "liger 0.1.0 (recipes-liger)" in result.output
    assert "hooks: register_loss_functions" in result.output.split("liger 0.1.0")[1].splitlines()[1]
    assert "loss:liger: Liger's fused linear cross-entropy" in result.output


def test_recipes_validate_accepts_it_and_checks_its_options(tmp_path):
    recipe = demo_recipe(tmp_path)
    assert CliRunner().invoke(main, ["validate", str(recipe)]).exit_code == 0
    recipe.write_text(recipe.read_text().replace('loss = "liger"', 'loss = "liger"\nloss_options = {chunk = 2}'))
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert result.exit_code == 2 and "loss_options.chunk" in result.output, result.output


def test_a_real_run_on_cpu_is_refused_with_one_line(tmp_path):
    import torch

    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(demo_recipe(tmp_path)), "--output-dir", str(run_dir)])
    if torch.cuda.is_available():  # a GPU machine: the kernel runs, or the refusal names the install
        assert result.exit_code == 0 or "pip install 'recipes-liger[kernel]'" in result.output, result.output
        return
    assert result.exit_code == 2, result.output
    [line] = [line for line in result.output.splitlines() if 'loss "liger"' in line]
    assert "CUDA GPUs only" in line and 'remove loss = "liger"' in line and '"chunked"' in line
    assert "Traceback" not in result.output
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert stages["domain"]["status"] != "done" and not (run_dir / "stages" / "domain" / "merged").exists()
