"""Per-stage quantization: LoRA pre-training on unquantized weights, then QLoRA SFT on its merged model,
in one recipe: validated (chaining across different weights refused at its line), planned (each
stage's memory with its own weights), run end to end through the real CLI on the tiny model (bitsandbytes
4-bit runs on this CPU), and imported from a LLaMA-Factory pair whose quantization_bit differs."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from click.testing import CliRunner

from conftest import GOOD_RECIPE, write
from recipes.cli import main

# the shared two-stage recipe, on the bundled data, a few steps, its SFT stage in QLoRA with a held-out set
QLORA_SFT = GOOD_RECIPE.replace('"corpus.jsonl"', '"bundled:domain_corpus.jsonl"').replace(
    '"chat.jsonl"', '"bundled:instructions.jsonl"').replace("\n[[stages]]", """
[defaults]
max_steps = 2
logging_steps = 1
per_device_train_batch_size = 2
gradient_accumulation_steps = 1
cutoff_len = 64

[[stages]]""", 1).replace('kind = "sft"\n', 'kind = "sft"\nval_size = 0.1\n[stages.quantization]\nbackend = "bitsandbytes"\n'
                          'bits = 4\n')


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_lora_pretraining_then_qlora_sft_runs_end_to_end(tmp_path, tiny_model):
    from transformers import AutoModelForCausalLM

    run_dir = tmp_path / "run"
    result = invoke("run", write(tmp_path / "r.toml", QLORA_SFT), "-o", run_dir)
    assert result.exit_code == 0, result.output + repr(result.exception)
    domain, sft = (run_dir / "stages" / name for name in ("domain", "sft"))
    assert f"model: {tiny_model} (none backend)" in result.output  # the first stage: unquantized weights
    assert f"model: {domain / 'merged'} (bitsandbytes backend)" in result.output  # its merged model, quantized
    # the SFT adapter, trained against 4-bit weights, evaluated merged into domain's fp32 model
    assert "merged model (bitsandbytes adapter merged into the fp32 base, as published): val loss" in result.output
    for stage in (domain, sft):
        config = json.loads((stage / "merged" / "config.json").read_text())
        assert "quantization_config" not in config  # both publish full-precision merged models
    model = AutoModelForCausalLM.from_pretrained(sft / "merged")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    adapter = json.loads((sft / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(domain / "merged")
    recipe = json.loads((run_dir / "recipe.json").read_text())
    assert [s["quantization"]["backend"] for s in recipe["stages"]] == ["none", "bitsandbytes"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    parts = {name: entry["parts"]["quantization"] for name, entry in manifest["stages"].items()}
    assert parts["domain"] == {"backend": "none"} and parts["sft"]["bits"] == 4  # in each stage's fingerprint
    assert json.loads((sft / "stage.json").read_text())["eval_loss_merged"] > 0


@pytest.mark.parametrize("chaining, message", [
    ("continue", "chaining \"continue\": stage 'sft' loads its weights bitsandbytes 4-bit nf4, its base stage "
                 "'domain' unquantized"),
    ("stack", "chaining \"stack\": "),
])
def test_chaining_across_different_weights_is_refused_at_its_line(tmp_path, chaining, message):
    addition, field = f'chaining = "{chaining}"\n', "stages[1].chaining"
    text = QLORA_SFT.replace('kind = "sft"\n', 'kind = "sft"\n' + addition)
    result = invoke("validate", write(tmp_path / "r.toml", text))
    assert result.exit_code == 2, result.output
    line = text.splitlines().index(addition.strip()) + 1
    assert f"r.toml:{line}:1: {field}: {message}" in result.output, result.output
    assert "Traceback" not in result.output


def test_chaining_is_free_when_both_stages_load_the_same_weights(tmp_path):
    """Control: the same continue, with both stages on 4-bit weights, validates."""
    text = QLORA_SFT.replace('kind = "sft"\n', 'kind = "sft"\nchaining = "continue"\n')
    text = text.replace('kind = "pretrain"\n', 'kind = "pretrain"\nquantization = {backend = "bitsandbytes", bits = 4}\n')
    result = invoke("validate", write(tmp_path / "r.toml", text))
    assert result.exit_code == 0, result.output


def test_a_stage_table_is_checked_like_the_recipe_one(tmp_path):
    text = QLORA_SFT.replace("bits = 4\n", "bits = 4\nquant_typ = \"nf4\"\n").replace(
        'kind = "pretrain"\n', 'kind = "pretrain"\nquantization = {backend = "bnb"}\n')
    result = invoke("validate", write(tmp_path / "r.toml", text))
    assert result.exit_code == 2
    lines = text.splitlines()
    backend_line = lines.index('quantization = {backend = "bnb"}') + 1
    option_line = lines.index('quant_typ = "nf4"') + 1
    assert f":{backend_line}:" in result.output, result.output
    assert "stages[0].quantization.backend: unknown quantization backend 'bnb'" in result.output, result.output
    assert f":{option_line}:1: stages[1].quantization.quant_typ: unknown option" in result.output, result.output


def test_the_plan_counts_each_stage_with_its_own_weights(tmp_path):
    """On Qwen2.5-7B's shipped config: bf16 weights for the LoRA stage, 4-bit for the QLoRA one."""
    text = QLORA_SFT.replace("bundled:tiny-qwen2", "Qwen/Qwen2.5-7B")
    recipe = write(tmp_path / "r.toml", text)
    result = invoke("plan", "--json", recipe)
    assert result.exit_code == 0, result.output
    estimate = json.loads(result.output)
    domain, sft = estimate["stages"]
    assert estimate["quantization"] == {"backend": "none"}
    assert domain["quantization"]["backend"] == "none" and sft["quantization"]["bits"] == 4
    assert sft["memory"]["weights"] < domain["memory"]["weights"] / 2.5, (domain["memory"], sft["memory"])
    assert sft["memory"]["total"] < domain["memory"]["total"]
    lines = invoke("plan", recipe).output
    assert "2. sft (sft) from domain, weights bitsandbytes 4-bit nf4" in lines and "1. domain (pretrain) from model\n" in lines
    # control: the same recipe with the recipe-wide table counts both stages alike
    whole = text.replace("[stages.quantization]\nbackend = \"bitsandbytes\"\nbits = 4\n", "").replace(
        "[defaults]", "[quantization]\nbackend = \"bitsandbytes\"\nbits = 4\n\n[defaults]")
    control = invoke("plan", "--json", write(tmp_path / "w.toml", whole))
    assert control.exit_code == 0, control.output
    both = json.loads(control.output)["stages"]
    assert both[0]["memory"]["weights"] == both[1]["memory"]["weights"] == sft["memory"]["weights"]


def test_llamafactory_configs_that_quantize_differently_import_per_stage(tmp_path):
    """LoRA pre-training unquantized, then SFT with quantization_bit 4 on its adapter: each stage keeps its
    own weights; the SFT stage starts from the merged model (LLaMA-Factory would continue the adapter on
    4-bit weights it was not trained on), and the imported recipe validates."""
    from test_import_faithful import imported

    pt = {"stage": "pt", "dataset": "c4_demo", "output_dir": "saves/pt"}
    sft = {"adapter_name_or_path": "saves/pt", "quantization_bit": 4}
    code, output, text, recipe = imported(tmp_path, pt, sft)
    assert code == 0, output
    assert recipe.quantization is None and recipe.stages[0].quantization is None
    assert recipe.stages[1].quantization.options() == {"bits": 4, "quant_type": "nf4", "double_quant": True}
    assert recipe.stages[1].chaining == "merge"
    assert "the configs quantize differently: pt unquantized, x 4-bit bnb nf4, double quantization" in output
    assert "here it starts from pt's merged model (chaining = \"merge\")" in output
    assert invoke("validate", tmp_path / "r.toml").exit_code == 0
    # 8-bit then 4-bit: two stage tables; the same bits in both configs: one recipe-wide table (control)
    code, output, text, recipe = imported(tmp_path / "b", {**pt, "quantization_bit": 8}, sft)
    assert code == 0, output
    assert [s.quantization.options()["bits"] for s in recipe.stages] == [8, 4] and recipe.quantization is None
    code, output, text, recipe = imported(tmp_path / "c", {**pt, "quantization_bit": 4}, sft)
    assert code == 0, output
    assert recipe.quantization.options()["bits"] == 4 and "[stages.quantization]" not in text
    assert recipe.stages[1].chaining == "continue" and "quantize differently" not in output
