"""Promises of the documentation that only a few lines back: two validation warnings, the FSDP and 4-bit
storage check, the multi-node flags of `recipes run`, v1 LoRA targets named one at a time, the refusal
of a chat template that rewrites earlier turns, the manifest written by rank 0 only, and a flag seen by
one of two gloo processes seen by both."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import GOOD_RECIPE, write
from recipes.cli import main


def validate(path, *flags):
    return CliRunner().invoke(main, ["validate", str(path), *flags])


@pytest.fixture
def recipe_dir(tmp_path):
    write(tmp_path / "corpus.jsonl", json.dumps({"text": "Bees make honey."}) + "\n")
    write(tmp_path / "chat.jsonl", json.dumps({"messages": [{"role": "user", "content": "Who makes honey?"},
                                                            {"role": "assistant", "content": "Bees."}]}) + "\n")
    return tmp_path


def test_an_sft_stage_ignoring_the_pretraining_before_it_and_both_warmups_are_warnings(recipe_dir):
    good = validate(write(recipe_dir / "good.toml", GOOD_RECIPE))
    assert good.exit_code == 0 and "warning" not in good.output, good.output  # control: no warning
    text = GOOD_RECIPE.replace('kind = "sft"', 'kind = "sft"\nbase = "model"\nwarmup_steps = 1\nwarmup_ratio = 0.1')
    path = write(recipe_dir / "r.toml", text)
    result = validate(path)
    assert result.exit_code == 0, result.output
    assert "the earlier pre-training stage's result is not used; set base to it" in result.output
    assert "both warmup_steps and warmup_ratio are set; warmup_steps wins" in result.output
    strict = validate(path, "--strict")
    assert strict.exit_code == 2 and "the earlier pre-training stage's result is not used" in strict.output


@pytest.mark.parametrize("storage, refused", [("", True), ('quant_storage = "fp16"', True),
                                              ('quant_storage = "bf16"', False)])
def test_fsdp_with_4bit_weights_needs_bf16_storage(recipe_dir, storage, refused):
    text = GOOD_RECIPE.replace("[model]", f'[distributed]\nstrategy = "fsdp"\n[quantization]\nbackend = "bitsandbytes"\n'
                                          f'{storage}\n[defaults]\nloss = "standard"\n[model]')
    result = validate(write(recipe_dir / "r.toml", text))
    message = 'FSDP with 4-bit QLoRA needs quant_storage = "bf16"'
    assert (message in result.output) == refused, result.output
    if refused:
        assert result.exit_code == 2 and "Traceback" not in result.output


def test_the_multi_node_flags_reach_torchrun(recipe_dir, monkeypatch):
    """The command `recipes run` starts: torchrun with the node flags (the launch itself is torch's: the
    command line is recorded where it is started, and a process that exits at once runs in its place)."""
    from recipes.training import distributed

    started, popen = [], distributed.subprocess.Popen

    def record(command, **kwargs):
        started.append(command)
        return popen([sys.executable, "-c", "pass"], **kwargs)

    monkeypatch.setattr(distributed.subprocess, "Popen", record)
    for variable in ("WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(variable, raising=False)
    path = write(recipe_dir / "r.toml", GOOD_RECIPE)
    run_dir = recipe_dir / "run"
    result = CliRunner().invoke(main, ["run", str(path), "-o", str(run_dir), "--nproc", "2", "--nnodes", "2",
                                       "--node-rank", "1", "--master-addr", "10.0.0.1", "--master-port", "29501"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    [command] = started
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    flags = dict(zip(command[3:13:2], command[4:13:2]))
    assert flags == {"--nproc_per_node": "2", "--nnodes": "2", "--node_rank": "1", "--master_addr": "10.0.0.1",
                     "--master_port": "29501"}
    assert command[13].endswith("recipes/__main__.py") and command[14:] == ["run", str(path), "-o", str(run_dir)]
    # one node: torchrun's standalone rendezvous
    started.clear()
    assert CliRunner().invoke(main, ["run", str(path), "-o", str(run_dir), "--nproc", "2"]).exit_code == 0
    assert "--standalone" in started[0] and "--node_rank" not in started[0]


@pytest.mark.parametrize("target, layers", [("attn.c_proj", "o_proj: self_attn.o_proj; 32 layers"),
                                            ("mlp.c_proj", "down_proj: mlp.down_proj; 32 layers"),
                                            ("c_proj", "o_proj, down_proj: self_attn.o_proj, mlp.down_proj; 64 layers")])
def test_a_v1_target_names_attention_or_mlp_c_proj_alone(tmp_path, target, layers):
    from qwen_recipes import bundled_recipes

    text = bundled_recipes()["qwen7b_lora_r64"].read_text(encoding="utf-8")
    assert 'lora_target = ["c_attn", "c_proj", "w1", "w2"]' in text
    path = write(tmp_path / "v1.toml", text.replace('lora_target = ["c_attn", "c_proj", "w1", "w2"]',
                                                    f'lora_target = ["{target}"]'))
    result = CliRunner().invoke(main, ["plan", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert layers in result.output, result.output


def test_a_chat_template_that_rewrites_earlier_turns_is_refused(tiny_model):
    from transformers import AutoTokenizer

    from recipes.data.tokenization import render_conversation
    from recipes.errors import RecipeError

    messages = [{"role": "user", "content": "Who makes honey?"}, {"role": "assistant", "content": "Bees."},
                {"role": "user", "content": "And wax?"}, {"role": "assistant", "content": "Bees too."}]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    text, spans = render_conversation(tokenizer, messages)  # control: Qwen2.5's template appends turns
    assert [text[a:b] for a, b in spans] == ["Bees.<|im_end|>", "Bees too.<|im_end|>"]
    # as Qwen3's strips <think> from history: an earlier answer rendered otherwise once it is history
    tokenizer.chat_template = (
        "{%- for m in messages -%}<|im_start|>{{ m.role }}\n"
        "{%- if m.role == 'assistant' and not loop.last %}(an earlier answer){% else %}{{ m.content }}{% endif -%}"
        "<|im_end|>\n{% endfor -%}{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif -%}")
    with pytest.raises(RecipeError, match="renders a conversation differently from its prefix; labels cannot be placed"):
        render_conversation(tokenizer, messages)


def test_only_rank_0_writes_the_manifest(tmp_path, monkeypatch):
    from recipes.run.manifest import Manifest

    for rank, folder in (("1", tmp_path / "rank1"), ("0", tmp_path / "rank0")):
        monkeypatch.setenv("RANK", rank)
        Manifest.load(folder).update("domain", status="running")
    assert not (tmp_path / "rank1").exists()
    assert json.loads((tmp_path / "rank0" / "manifest.json").read_text())["stages"]["domain"]["status"] == "running"


ANY_RANK = """
import json, os, sys
import torch.distributed as dist
from recipes.training import distributed

distributed.init("cpu")
rank = dist.get_rank()
seen = {"nan_on_rank_1": distributed.any_rank(rank == 1), "nowhere": distributed.any_rank(False)}
json.dump(seen, open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w"))
"""


def test_a_non_finite_loss_on_one_rank_is_seen_by_every_rank(tmp_path):
    """The guard's collective (any_rank): what rank 1 alone sees, both ranks act on, at the same step."""
    script = write(tmp_path / "any_rank.py", ANY_RANK)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == {"nan_on_rank_1": True, "nowhere": False}
