"""The quantization backends on their hook: each validates its own options (located errors), and
every bitsandbytes setting loads, is prepared for k-bit training and trains a step on this CPU."""

from __future__ import annotations


import pytest
import torch
from click.testing import CliRunner

from conftest import write
from recipes.cli import main
from recipes.plugins.registry import get_registry

RECIPE = """\
[model]
path = "bundled:tiny-qwen2"
[quantization]
backend = "bitsandbytes"
{options}
[[stages]]
name = "domain"
kind = "pretrain"
[[stages.data]]
path = "bundled:domain_corpus.jsonl"
format = "text"
"""


@pytest.mark.parametrize("options,expected", [
    ('bits = 8\nquant_type = "nf4"', ":6:1: quantization.quant_type: quant_type applies to 4-bit only; remove it or set bits = 4"),
    ("bits = 8\ndouble_quant = false", ":6:1: quantization.double_quant: double_quant applies to 4-bit only"),
    ("llm_int8_threshold = 4.0", ":5:1: quantization.llm_int8_threshold: llm_int8_threshold applies to 8-bit only"),
    ('quant_storage = "int4"', ":5:1: quantization.quant_storage: Input should be 'uint8', 'bf16', 'fp16' or 'fp32'"),
    ('compute_dtype = "bf32"', ":5:1: quantization.compute_dtype:"),
    ('skip_module = ["down_proj"]', ':5:1: quantization.skip_module: unknown option \'skip_module\'; did you mean "skip_modules"?'),
])
def test_a_backend_option_that_does_not_fit_is_located(tmp_path, options, expected):
    path = write(tmp_path / "q.toml", RECIPE.format(options=options))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert f"error: {path}{expected}" in result.output, result.output


def _load(tiny_model, options: dict, dtype=torch.float32):
    """The model as a stage loads it: through the project's loader and the backend's hook."""
    from recipes.training.model import load_model

    backend = get_registry().backends["bitsandbytes"]
    validated = backend.options_model.model_validate(options)
    return load_model(str(tiny_model), backend, validated, dtype, {}, "cpu", True)


@pytest.mark.parametrize("options,layer", [
    ({"quant_type": "fp4", "double_quant": False}, "Linear4bit"),
    ({"quant_storage": "bf16"}, "Linear4bit"),
    ({"bits": 8, "llm_int8_threshold": 3.0, "skip_modules": ["down_proj"]}, "Linear8bitLt"),
])
def test_each_bitsandbytes_setting_loads_and_trains_on_cpu(tiny_model, options, layer):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_load(tiny_model, options), LoraConfig(r=8, target_modules="all-linear",
                                                                  task_type="CAUSAL_LM"))
    layers = {name: type(module.base_layer).__name__ for name, module in model.named_modules()
              if name.endswith(("q_proj", "down_proj")) and hasattr(module, "base_layer")}
    assert layers["base_model.model.model.layers.0.self_attn.q_proj"] == layer
    skipped = "down_proj" in options.get("skip_modules", [])
    assert layers["base_model.model.model.layers.0.mlp.down_proj"] == ("Linear" if skipped else layer)
    assert type(model.base_model.model.lm_head).__name__ == "Linear"  # the output head is never quantized
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 1000, (2, 16))
    losses = []
    for _ in range(3):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_kbit_preparation_keeps_norms_in_the_compute_dtype_freezes_and_checkpoints_without_reentrancy(tiny_model):
    model = _load(tiny_model, {"compute_dtype": "bf16"}, dtype=torch.bfloat16)
    norms = {n: p.dtype for n, p in model.named_parameters() if "norm" in n}
    assert norms and set(norms.values()) == {torch.bfloat16}  # peft's fp32 upcast undone (tests/test_qlora_precision.py)
    assert not any(p.requires_grad for p in model.parameters())  # LoRA adds the trainable weights
    checkpoint = model.model.layers[0]._gradient_checkpointing_func
    assert model.model.layers[0].gradient_checkpointing and checkpoint.keywords == {"use_reentrant": False}
