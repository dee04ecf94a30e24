"""The bundled QLoRA demo: both stages on CPU, training 4-bit bitsandbytes layers under LoRA."""

from __future__ import annotations

import json
import textwrap

from conftest import without_benchmarks_and_samples
from recipes.plugins.hookspecs import CallbackPlugin, hookimpl
from recipes.config.load import load_recipe
from recipes.planning.plan import make_plan
from recipes.plugins.registry import get_registry
from recipes.run.runner import run_plan


def test_the_bundled_qlora_demo_runs_both_stages(demo_qlora_run):
    run_dir, output = demo_qlora_run
    assert output.count("(bitsandbytes backend)") == 2
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert {name: entry["status"] for name, entry in stages.items()} == {"domain": "done", "sft": "done"}
    for name, entry in stages.items():
        result = entry["result"]
        assert result["final_loss"] < result["first_loss"], (name, result)
        assert stages[name]["parts"]["quantization"]["quant_type"] == "nf4"


def inspector(seen: dict):
    """A callback plugin that records, when training begins, what the Trainer trains."""
    from transformers import TrainerCallback

    class Inspect(TrainerCallback):
        def __init__(self, stage):
            self.stage = stage

        def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
            q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
            seen[self.stage] = {
                "lora_layer": f"{type(q_proj).__module__}.{type(q_proj).__name__}",
                "base_layer": f"{type(q_proj.base_layer).__module__}.{type(q_proj.base_layer).__name__}",
                "weight": type(q_proj.base_layer.weight).__name__,
                "quant_type": q_proj.base_layer.weight.quant_type,
                "double_quant": q_proj.base_layer.weight.quant_state.nested,
                "optimizer": type(getattr(optimizer, "optimizer", optimizer)).__module__,
            }

    class InspectPlugin:
        @hookimpl
        def register_callbacks(self):
            return [CallbackPlugin("inspect", lambda context: Inspect(context.stage_name), default=True)]

    return InspectPlugin()


def test_both_stages_train_lora_on_bitsandbytes_4bit_layers(tmp_path, tiny_model):
    from rich.console import Console

    from qwen_recipes import bundled_recipes

    text = without_benchmarks_and_samples(bundled_recipes()["demo_qlora"].read_text())  # what is inspected: the layers
    text = text.replace("[defaults]", textwrap.dedent("""\
        [defaults]
        max_steps = 2
        logging_steps = 1"""), 1).replace("cutoff_len = 256", "cutoff_len = 64").replace("logging_steps = 2\n", "")
    recipe = tmp_path / "small_qlora.toml"
    recipe.write_text(text)
    seen: dict = {}
    registry = get_registry(extra_plugins=(inspector(seen),))
    plan = make_plan(load_recipe(str(recipe), registry), registry, str(tmp_path / "run"))
    run_plan(plan, Console(file=open(tmp_path / "out.txt", "w")), registry)
    expected = {"lora_layer": "peft.tuners.lora.bnb.Linear4bit", "base_layer": "bitsandbytes.nn.modules.Linear4bit",
                "weight": "Params4bit", "quant_type": "nf4", "double_quant": True,
                "optimizer": "bitsandbytes.optim.adamw"}
    assert seen == {"domain": expected, "sft": expected}
