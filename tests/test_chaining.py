"""How stage 2 starts from stage 1: merge, continue, stack. Each test checks which weights trained in
stage 2 by rebuilding the published merged model from the adapters that should make it up."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from conftest import write
from recipes.cli import main

CHAIN = """
[model]
path = "bundled:tiny-qwen2"
[defaults]
learning_rate = 1e-2
cutoff_len = 64
max_steps = 3
per_device_train_batch_size = 2
gradient_accumulation_steps = 1
[[stages]]
name = "pt"
kind = "pretrain"
[[stages.data]]
path = "corpus.jsonl"
format = "text"
[[stages]]
name = "sft"
kind = "sft"
chaining = "{mode}"
[[stages.data]]
path = "chat.jsonl"
format = "messages"
"""


def _run(tmp_path, mode, stage2: str = ""):
    write(tmp_path / "corpus.jsonl", "".join(json.dumps({"text": f"Bees make honey {i}. " * 12}) + "\n" for i in range(8)))
    write(tmp_path / "chat.jsonl", "".join(json.dumps({"messages": [
        {"role": "user", "content": f"Question {i} about bees?"},
        {"role": "assistant", "content": f"Answer {i}: bees make honey."}]}) + "\n" for i in range(8)))
    recipe = write(tmp_path / "chain.toml", CHAIN.format(mode=mode).replace(
        f'chaining = "{mode}"', f'chaining = "{mode}"\n{stage2}'))
    result = CliRunner().invoke(main, ["run", str(recipe), "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    return tmp_path / "run" / "stages", result.output


def _rebuilt(base, *adapters):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    for adapter in adapters:
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return model.state_dict()


def _close(ours, published_folder, tolerance=1e-5):
    published = load_file(published_folder / "model.safetensors")
    worst = max((ours[k] - published[k]).abs().max().item() for k in published)
    assert worst <= tolerance, worst


def _adapter(folder):
    return load_file(folder / "adapter_model.safetensors")


@pytest.mark.parametrize("mode", ["merge", "continue", "stack"])
def test_chaining(tmp_path, tiny_model, mode):
    # under continue, stage 2 at a rate too small to move its adapter far: that adapter is then still
    # stage 1's (trained, lora_B far from zero), where a fresh one would start with lora_B at zero
    stages, output = _run(tmp_path, mode, stage2="learning_rate = 1e-6" if mode == "continue" else "")
    assert f"chaining {mode}:" in output
    pt, sft = _adapter(stages / "pt" / "adapter"), _adapter(stages / "sft" / "adapter")
    assert pt.keys() == sft.keys()
    assert any(not torch.equal(pt[k], sft[k]) for k in pt)  # stage 2 trained an adapter
    config = json.loads((stages / "sft" / "adapter" / "adapter_config.json").read_text())
    if mode == "merge":
        # a new adapter (B starts at zero) on pt's merged model
        assert config["base_model_name_or_path"] == str(stages / "pt" / "merged")
        _close(_rebuilt(stages / "pt" / "merged", stages / "sft" / "adapter"), stages / "sft" / "merged")
    elif mode == "continue":
        # pt's adapter trained further, on the original model: pt's adapter is not part of the result
        assert config["base_model_name_or_path"] == str(tiny_model)
        _close(_rebuilt(tiny_model, stages / "sft" / "adapter"), stages / "sft" / "merged")
        assert max(pt[k].abs().max().item() for k in pt if "lora_B" in k) > 1e-3
        assert max((sft[k] - pt[k]).abs().max().item() for k in pt) < 1e-4
    else:
        # pt's adapter frozen and still applied, a new one on top: the result is model + pt + sft,
        # and the new adapter applies on pt's merged model
        assert config["base_model_name_or_path"] == str(stages / "pt" / "merged")
        _close(_rebuilt(tiny_model, stages / "pt" / "adapter", stages / "sft" / "adapter"), stages / "sft" / "merged")
        _close(_rebuilt(stages / "pt" / "merged", stages / "sft" / "adapter"), stages / "sft" / "merged")
