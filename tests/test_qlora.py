"""QLoRA (bitsandbytes 4-bit, which runs on this CPU) through two chained stages."""

from __future__ import annotations

import json
import textwrap

import torch
from click.testing import CliRunner

from conftest import write
from recipes.cli import main


def test_two_qlora_stages_chain_through_an_unquantized_merge(tmp_path, tiny_model):
    recipe = write(tmp_path / "q.toml", textwrap.dedent("""
        [model]
        path = "bundled:tiny-qwen2"
        [quantization]
        backend = "bitsandbytes"
        bits = 4
        quant_type = "nf4"
        [defaults]
        max_steps = 2
        logging_steps = 1
        per_device_train_batch_size = 2
        gradient_accumulation_steps = 1
        cutoff_len = 64
        [[stages]]
        name = "domain"
        kind = "pretrain"
        [[stages.data]]
        path = "bundled:domain_corpus.jsonl"
        format = "text"
        [[stages]]
        name = "sft"
        kind = "sft"
        [[stages.data]]
        path = "bundled:instructions.jsonl"
        format = "messages"
    """))
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(recipe), "-o", str(run_dir)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "(bitsandbytes backend)" in result.output
    from transformers import AutoModelForCausalLM

    for stage in ("domain", "sft"):
        merged = run_dir / "stages" / stage / "merged"
        config = json.loads((merged / "config.json").read_text())
        assert "quantization_config" not in config  # merged in full precision, never into 4-bit
        model = AutoModelForCausalLM.from_pretrained(merged)
        assert {p.dtype for p in model.parameters()} == {torch.float32}
    adapter = json.loads((run_dir / "stages" / "sft" / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(run_dir / "stages" / "domain" / "merged")
