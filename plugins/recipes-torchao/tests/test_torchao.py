"""The installed torchao backend through the real host: the registry finds it by its entry point,
`recipes validate` checks its options, `recipes plan` counts its bytes, and the demo's two stages
train LoRA on torchao int8 layers and merge into plain weights that load in transformers."""

from __future__ import annotations

import json
import os
import math
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipes.cli import main
from recipes.plugins.registry import get_registry

# no conftest.py here: run beside the host's tests, a second module named conftest would shadow theirs
QUANTIZATION = re.compile(r"\[quantization\].*?\n\n", re.S)
TORCHAO = '[quantization]\nbackend = "torchao"\nscheme = "int8_weight_only"\n\n'


@pytest.fixture(scope="module", autouse=True)
def private_caches(tmp_path_factory):
    """No network, and the tiny model is built in a cache of this module's own."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_HOME", "RECIPES_CACHE")}
    root = tmp_path_factory.mktemp("torchao_caches")
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


def demo_recipe(tmp_path, quantization: str = TORCHAO, steps: int = 6):
    """The bundled demo_qlora recipe with torchao instead of bitsandbytes, at a few steps."""
    from qwen_recipes import bundled_recipes

    text = bundled_recipes()["demo_qlora"].read_text(encoding="utf-8")
    text = QUANTIZATION.sub(quantization, text, count=1)
    text = text.replace('optim = "adamw_bnb_8bit"', 'optim = "adamw_torch"').replace("cutoff_len = 256", "cutoff_len = 64")
    text = text.replace("logging_steps = 2\n", f"logging_steps = 1\nmax_steps = {steps}\n")
    # without the exam: what is checked is the layers trained and merged, not a score
    text, left_out = re.subn(r"^\[\[benchmarks\]\]\n(?:[^\[\n].*\n|\n)*", "", text, flags=re.M)
    assert left_out == 1, text
    recipe = tmp_path / "demo_torchao.toml"
    recipe.write_text(text, encoding="utf-8")
    return recipe


def test_the_backend_is_loaded_from_its_entry_point():
    registry = get_registry()
    assert registry.info["torchao"].source == "recipes-torchao"
    assert registry.backends["torchao"].quantizes
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "torchao 0.1.0 (recipes-torchao)" in result.output
    assert "backend:torchao: torchao int8 weight-only" in result.output


def test_recipes_validate_checks_its_options(tmp_path):
    recipe = demo_recipe(tmp_path, '[quantization]\nbackend = "torchao"\nscheme = "int4"\nskip_module = []\n\n')
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert result.exit_code == 2, result.output
    assert "demo_torchao.toml:" in result.output and "quantization.scheme" in result.output
    assert "quantization.skip_module" in result.output and 'did you mean "skip_modules"' in result.output
    assert "Traceback" not in result.output
    assert CliRunner().invoke(main, ["validate", str(demo_recipe(tmp_path))]).exit_code == 0


def plan_weights(recipe) -> int:
    result = CliRunner().invoke(main, ["plan", str(recipe), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["stages"][0]["memory"]["weights"]


def test_plan_counts_its_bytes_per_weight_next_to_bitsandbytes(tmp_path):
    """Qwen2.5-7B (the shipped config) on a GPU: torchao's 1 byte a linear weight (plus bf16 row
    scales) lies between bitsandbytes' 4-bit nf4 and unquantized bf16, by the backend's own count."""
    from qwen_recipes import bundled_recipes
    from recipes.config.model_info import model_info  # host internals, to state the expected number

    qlora = bundled_recipes()["domain_qwen_qlora"]
    text = qlora.read_text(encoding="utf-8")
    torchao, full = tmp_path / "ao.toml", tmp_path / "full.toml"
    torchao.write_text(QUANTIZATION.sub(TORCHAO, text, count=1), encoding="utf-8")
    full.write_text(QUANTIZATION.sub("", text, count=1), encoding="utf-8")
    ao, bnb, bf16 = plan_weights(torchao), plan_weights(qlora), plan_weights(full)
    shape = get_registry().family.shape_of(model_info("Qwen/Qwen2.5-7B", None, tmp_path).config)
    linear = shape.linear_parameters
    assert ao == math.ceil(linear * (1 + 2 / 1024)) + (shape.total_parameters - linear) * 2
    assert bf16 == shape.total_parameters * 2
    assert bnb < ao < bf16, (bnb, ao, bf16)


def inspector(seen: dict):
    """A callback plugin that records, when each stage begins training, the base layer LoRA wraps."""
    from transformers import TrainerCallback

    from recipes.api import CallbackPlugin, hookimpl

    class Inspect(TrainerCallback):
        def __init__(self, stage):
            self.stage = stage

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
            weight = q_proj.base_layer.weight
            seen[self.stage] = {"weight": type(weight).__module__.split(".")[0],
                                "int8": str(getattr(getattr(weight, "qdata", None), "dtype", None)),
                                "frozen": not weight.requires_grad}

    class InspectPlugin:
        @hookimpl
        def register_callbacks(self):
            return [CallbackPlugin("inspect", lambda context: Inspect(context.stage_name), default=True)]

    return InspectPlugin()


def test_the_demo_trains_both_stages_on_torchao_layers_and_merges_plain_weights(tmp_path):
    import torch
    from rich.console import Console
    from transformers import AutoModelForCausalLM

    from recipes.config.load import load_recipe  # host internals: a run with an inspecting plugin
    from recipes.planning.plan import make_plan
    from recipes.run.runner import run_plan

    run_dir, seen = tmp_path / "run", {}
    registry = get_registry(extra_plugins=(inspector(seen),))
    plan = make_plan(load_recipe(str(demo_recipe(tmp_path)), registry), registry, str(run_dir))
    with open(tmp_path / "out.txt", "w") as out:
        run_plan(plan, Console(file=out, width=200), registry)
    assert (tmp_path / "out.txt").read_text().count("(torchao backend)") == 2
    # LoRA trains on torchao's int8 tensors in both stages (not on plain weights)
    expected = {"weight": "torchao", "int8": "torch.int8", "frozen": True}
    assert seen == {"domain": expected, "sft": expected}, seen
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert {name: entry["status"] for name, entry in stages.items()} == {"domain": "done", "sft": "done"}
    for name, entry in stages.items():
        assert entry["result"]["final_loss"] < entry["result"]["first_loss"], (name, entry["result"])
        assert entry["parts"]["quantization"] == {"backend": "torchao", "scheme": "int8_weight_only",
                                                  "skip_modules": None}
        merged = run_dir / "stages" / name / "merged"
        config = json.loads((merged / "config.json").read_text())
        assert "quantization_config" not in config
        model = AutoModelForCausalLM.from_pretrained(merged)
        q_proj = model.model.layers[0].self_attn.q_proj.weight
        assert type(q_proj) is torch.nn.Parameter and q_proj.dtype in (torch.float32, torch.bfloat16, torch.float16)
        ids = torch.tensor([[1, 2, 3, 4]])
        assert torch.isfinite(model(input_ids=ids).logits).all()
