"""The same recipe in two processes on CPU (DDP over gloo, through torchrun): both stages complete,
the ranks split the data, only rank 0 publishes, a killed rank ends the run with a clear error, and a
re-run resumes."""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import write
from test_resume import TWO_STAGES, Run, small_recipe


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_two_processes_kill_a_rank_and_resume(tmp_path, tiny_model):
    small_recipe(tmp_path)
    write(tmp_path / "chat.jsonl", "".join(json.dumps({"messages": [
        {"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]}) + "\n"
        for i in range(8)))
    text = (TWO_STAGES.replace("max_steps = 2", "num_train_epochs = 1").replace("save_steps = 100", "save_steps = 2")
            .replace('name = "chat"', 'name = "chat"\npacking = false'))
    recipe = write(tmp_path / "two.toml", text)
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "recipes", "run", str(recipe), "-o", str(run_dir), "--nproc", "2"]

    # kill one rank mid-way through stage 1, after its first checkpoint
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = Run.__new__(Run)
    run.run_dir = run_dir
    deadline = time.monotonic() + 300
    while not run.stages().get("pre", {}).get("checkpoint"):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    [torchrun] = _children(process.pid)
    workers = _children(torchrun)
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGKILL)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 1, output
    assert "error: a process of the 2-process run failed" in output and "Traceback" not in output.split("error:")[-1]

    # again: resumes, both stages complete
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resuming from checkpoint-" in result.stdout
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert [stages[name]["status"] for name in ("pre", "chat")] == ["done", "done"]
    # 28 pre-training blocks in batches of 2 per rank: 7 steps with two ranks (14 with one)
    assert stages["pre"]["result"]["steps"] == 7 and stages["chat"]["result"]["steps"] == 2
    assert "x 2 processes" in result.stdout

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    for name in ("pre", "chat"):
        assert sorted(p.name for p in (run_dir / "stages" / name).iterdir()) == ["adapter", "merged", "stage.json"]
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(run_dir / "stages" / "pre" / "merged"),
                              str(run_dir / "stages" / "chat" / "adapter"))


def test_each_strategy_validates_and_becomes_the_trainers_own_settings(tmp_path):
    from click.testing import CliRunner

    from recipes.cli import main
    from recipes.config.load import load_recipe
    from recipes.training.trainer import sharding_arguments

    write(tmp_path / "corpus.jsonl", '{"text": "Bees."}\n')
    base = ('[model]\npath = "bundled:tiny-qwen2"\n{extra}\n[[stages]]\nname = "a"\nkind = "pretrain"\n'
            '[[stages.data]]\npath = "corpus.jsonl"\nformat = "text"\n')
    cases = {
        "ddp": ('[distributed]\nstrategy = "ddp"', {}),
        "fsdp": ('[distributed]\nstrategy = "fsdp"\nfsdp_sharding = "shard_grad_op"\ncpu_offload = true'
                 '\n[defaults]\nloss = "standard"', {"fsdp": True}),
        "fsdp-qlora": ('[distributed]\nstrategy = "fsdp"\n[quantization]\nbackend = "bitsandbytes"\nquant_storage = "bf16"'
                       '\n[defaults]\nloss = "standard"', {"fsdp": True}),
        "zero2": ('[distributed]\nstrategy = "deepspeed"\ncpu_offload = true', {}),
        "zero3": ('[distributed]\nstrategy = "deepspeed"\nzero_stage = 3\n[defaults]\nloss = "standard"', {}),
    }
    for name, (extra, expected) in cases.items():
        path = write(tmp_path / f"{name}.toml", base.format(extra=extra))
        result = CliRunner().invoke(main, ["validate", str(path)])
        assert result.exit_code == 0, (name, result.output)
        settings = load_recipe(str(path)).recipe.distributed
        arguments = sharding_arguments(settings, "cuda", ["Qwen2DecoderLayer"])
        for key, value in expected.items():
            assert arguments[key] == value
        if settings.strategy == "fsdp":  # FSDP2: resharding after forward is what the sharding names
            config = arguments["fsdp_config"]
            assert config["transformer_layer_cls_to_wrap"] == ["Qwen2DecoderLayer"] and config["version"] == 2
            assert config["reshard_after_forward"] is (settings.fsdp_sharding != "shard_grad_op")
            assert config.get("cpu_offload", False) is settings.cpu_offload
        if settings.strategy == "deepspeed":
            zero = arguments["deepspeed"]["zero_optimization"]
            assert zero["stage"] == (settings.zero_stage or 2)
            assert ("offload_optimizer" in zero) == settings.cpu_offload
    from recipes.errors import RecipeError

    try:
        sharding_arguments(load_recipe(str(tmp_path / "fsdp.toml")).recipe.distributed, "cpu", [])
    except RecipeError as exc:
        assert "needs GPUs; on CPU use \"ddp\"" in str(exc)
    else:
        raise AssertionError("FSDP on CPU was not refused")


def test_plan_memory_per_gpu_follows_the_strategy(tmp_path):
    from click.testing import CliRunner

    from qwen_recipes import RECIPES_DIR
    from recipes.cli import main

    text = (RECIPES_DIR / "domain_qwen.toml").read_text().replace('"bundled:', f'"{RECIPES_DIR.parent / "data"}/')
    text = re.sub(r"^\[\[benchmarks\]\].*?(?=^\[\[stages\]\])", "", text, flags=re.S | re.M)  # FSDP refuses benchmarks

    def memory(strategy, nproc):
        path = write(tmp_path / f"{strategy}.toml", text.replace("[defaults]", f'[distributed]\n{strategy}\n\n[defaults]\nloss = "standard"  # FSDP + chunked is refused'))
        result = CliRunner().invoke(main, ["plan", str(path), "--nproc", str(nproc), "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)["stages"][0]["memory"]

    alone, ddp = memory('strategy = "ddp"', 1), memory('strategy = "ddp"', 4)
    fsdp, zero2 = memory('strategy = "fsdp"', 4), memory('strategy = "deepspeed"\nzero_stage = 2', 4)
    assert ddp["total"] == alone["total"]  # DDP replicates
    assert fsdp["weights"] == alone["weights"] // 4 and fsdp["optimizer"] == alone["optimizer"] // 4
    assert zero2["weights"] == alone["weights"] and zero2["gradients"] == alone["gradients"] // 4
    assert fsdp["activations"] == alone["activations"] and fsdp["total"] < zero2["total"] < alone["total"]
