"""The bundled demo, end to end: both stages train, loss falls, outputs load with plain libraries."""

from __future__ import annotations

import json

import pytest
import torch


def _losses(run_dir, stage):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["event"] == "run_start"
    return [row["loss"] for row in rows if row.get("stage") == stage and "loss" in row]


def test_both_stages_complete_and_loss_falls(demo_run):
    run_dir, output = demo_run
    for stage in ("domain", "sft"):
        summary = json.loads((run_dir / "stages" / stage / "stage.json").read_text())
        assert summary["steps"] > 0
        losses = _losses(run_dir, stage)
        assert len(losses) >= 3
        # the mean of the last logged losses is clearly below the first
        tail = sum(losses[-3:]) / 3
        assert tail < losses[0] - 0.2, (stage, losses)
    assert (run_dir / "recipe.json").is_file() and (run_dir / "run.log").is_file()
    assert "Final model:" in output and str(run_dir / "stages" / "sft" / "merged") in output
    assert "precision: auto: fp32" in output


def test_sft_stage_starts_from_the_domain_stage(demo_run):
    run_dir, _ = demo_run
    summary = json.loads((run_dir / "stages" / "sft" / "stage.json").read_text())
    assert summary["base"] == "domain"
    adapter = json.loads((run_dir / "stages" / "sft" / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(run_dir / "stages" / "domain" / "merged")


@pytest.mark.parametrize("stage", ["domain", "sft"])
def test_merged_model_equals_base_plus_adapter(demo_run, tiny_model, stage):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_dir, _ = demo_run
    folder = run_dir / "stages" / stage
    base_path = tiny_model if stage == "domain" else run_dir / "stages" / "domain" / "merged"
    ids = torch.tensor([[151644, 872, 198, 108386, 1879, 151645, 198, 151644, 77091, 198]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(folder / "merged", dtype=torch.float32).eval()
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
        adapted = PeftModel.from_pretrained(base, folder / "adapter").eval()
        a, b = merged(ids).logits, adapted(ids).logits
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def test_stage_two_trained_on_merged_stage_one_not_on_original(demo_run, tiny_model):
    """The SFT adapter reproduces the final model only on top of the stage-1 merge."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_dir, _ = demo_run
    ids = torch.tensor([[151644, 872, 198, 108386, 1879, 151645, 198]])
    sft_adapter = run_dir / "stages" / "sft" / "adapter"
    with torch.no_grad():
        final = AutoModelForCausalLM.from_pretrained(run_dir / "stages" / "sft" / "merged").eval()(ids).logits
        on_original = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(tiny_model), sft_adapter).eval()(ids).logits
        on_stage_one = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(run_dir / "stages" / "domain" / "merged"),
            sft_adapter).eval()(ids).logits
    assert torch.allclose(final, on_stage_one, atol=1e-4)
    assert (final - on_original).abs().max() > 1e-2


def test_published_folders_carry_the_tokenizer(demo_run):
    from transformers import AutoTokenizer

    run_dir, _ = demo_run
    for sub in ("adapter", "merged"):
        tok = AutoTokenizer.from_pretrained(run_dir / "stages" / "sft" / sub)
        assert tok.convert_tokens_to_ids("<|im_end|>") == 151645
        assert tok.chat_template and "<|im_start|>" in tok.chat_template
    leftovers = [p for p in (run_dir / "stages").rglob(".*") if p.name.endswith((".partial", ".old"))]
    assert not leftovers


def test_run_folder_records_the_resolved_settings(demo_run):
    run_dir, _ = demo_run
    resolved = json.loads((run_dir / "recipe.json").read_text())
    sft = resolved["stages"][1]
    assert sft["base"] == "domain" and sft["settings"]["learning_rate"] == 1e-2
    assert sft["settings"]["optim"] == "adamw_torch" and sft["settings"]["seed"] == 42
    assert sft["data"][0]["format"] == "messages" and sft["data"][0]["files"][0].endswith("instructions.jsonl")


def test_sft_model_stops_at_im_end(demo_run):
    from transformers import GenerationConfig

    run_dir, _ = demo_run
    config = GenerationConfig.from_pretrained(run_dir / "stages" / "sft" / "merged")
    assert config.eos_token_id == [151645, 151643]
