"""What the tests of every tracker plugin package (plugins/recipes-wandb, plugins/recipes-swanlab) check
the same way, through the real host: the plugin found by its entry point, a two-stage demo run with the
tracker named, no callback on other ranks, and without the plugin a validate error naming its package.
Each tracker's own test reads its run folder back with the tracker's own record format.

Not a conftest: the plugin packages' tests put this folder on the import path themselves (a second
module named conftest would shadow the host's)."""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipes.cli import main
from recipes.plugins.registry import get_registry


@contextmanager
def private_caches(root: Path, drop: tuple = (), **env):
    """Private HF and recipes caches, the tracker's own settings (``env``) set and ``drop`` unset, all
    restored afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        for key in drop:
            patch.delenv(key, raising=False)
        for key, value in dict(HF_HUB_OFFLINE="1", HF_HOME=str(root / "hf"), RECIPES_CACHE=str(root / "recipes"),
                               **env).items():
            patch.setenv(key, value)
        yield


def demo_recipe(tmp_path: Path, callback: str, steps: int = 3) -> Path:
    """The bundled two-stage demo at a few steps, with the tracker named; no samples, no benchmark (what
    a tracker logs is the stages' numbers and the report)."""
    from qwen_recipes import bundled_recipes

    text = bundled_recipes()["demo"].read_text(encoding="utf-8")
    cheaper = re.sub(r"^samples = .*$", "samples = []", text, count=1, flags=re.MULTILINE)  # a tracker logs no answers
    cheaper = re.sub(r"^\[\[benchmarks\]\]\n(?:\w.*\n)*", "", cheaper, count=1, flags=re.MULTILINE)  # nor scores
    assert cheaper.count("\n") == text.count("\n") - 4, "the demo recipe changed: update demo_recipe"
    text = cheaper.replace("[model]", f'callbacks = ["metrics_jsonl", "{callback}"]\n\n[model]', 1)
    text = text.replace("cutoff_len = 256", "cutoff_len = 64").replace(
        "logging_steps = 2\n", f"logging_steps = 1\nmax_steps = {steps}\n")
    recipe = tmp_path / f"demo_{callback}.toml"
    recipe.write_text(text, encoding="utf-8")
    return recipe


def run_demo(tmp_path: Path, callback: str, steps: int = 3) -> Path:
    """The demo run through the CLI with the tracker; its run folder. The tracker's closing line names its run."""
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(demo_recipe(tmp_path, callback, steps)), "--output-dir", str(run_dir)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    run_id = (run_dir / f"{callback}_run_id").read_text().strip()
    assert f"{callback}: run {run_id} (demo)" in result.output
    return run_dir


def jsonl_losses(run_dir: Path, stage: str) -> list[float]:
    """A stage's training losses as the host recorded them (metrics.jsonl): what a tracker must hold."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r.get("stage") == stage and "loss" in r]


def check_entry_point(name: str, package: str, description: str) -> None:
    registry = get_registry()
    assert registry.info[name].source == package
    assert registry.callbacks[name].finish is not None and not registry.callbacks[name].default
    result = CliRunner().invoke(main, ["plugins"])
    assert f"{name} 0.1.0 ({package})" in result.output and f"callback:{name}: {description}" in result.output


def check_other_ranks_build_nothing(name: str, tmp_path: Path, monkeypatch) -> None:
    from recipes.api import StageContext

    monkeypatch.setenv("RANK", "1")
    context = StageContext(run_dir=tmp_path, stage_name="domain", stage_index=0, stage_count=2, console=None,
                           metrics_path=tmp_path / "metrics.jsonl")
    assert get_registry().callbacks[name].build(context) is None
    assert not list(tmp_path.iterdir())


def check_validate_names_the_package(name: str, package: str, tmp_path: Path, monkeypatch) -> None:
    """With every installed plugin but this one, validate refuses the recipe naming the package."""
    from importlib import metadata

    from recipes.plugins import registry

    others = [ep.name for ep in metadata.entry_points(group=registry.ENTRY_POINT_GROUP) if ep.name != name]
    monkeypatch.setenv("RECIPES_PLUGINS", ",".join(others))
    monkeypatch.setattr(registry, "_cached", None)  # restored after the test
    result = CliRunner().invoke(main, ["validate", str(demo_recipe(tmp_path, name))])
    assert result.exit_code == 2, result.output
    assert f"unknown callback '{name}'; the plugin package {package} provides it" in result.output
