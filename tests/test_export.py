"""recipes export: the merged folder loads and generates in plain transformers, the adapter loads
with peft on the base it names, and every bad request is one line with exit code 2."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from recipes.cli import main


def export(*args):
    return CliRunner().invoke(main, ["export", *map(str, args)])


def test_the_merged_export_loads_and_generates(demo_qlora_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, _ = demo_qlora_run
    to = tmp_path / "merged"
    result = export(run_dir, "--to", to, "--dtype", "bf16", "--max-shard-size", "10MB")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"exported merged of stage 'sft' to {to}" in result.output  # the last stage by default
    index = json.loads((to / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2  # sharded at 10 MB
    assert {"chat_template.jinja", "tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= {
        p.name for p in to.iterdir()}
    assert not list(tmp_path.glob(".*partial"))
    config = json.loads((to / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and config["eos_token_id"] == 151645 and "quantization_config" not in config
    assert json.loads((to / "generation_config.json").read_text())["eos_token_id"] == [151645, 151643]
    tokenizer_config = json.loads((to / "tokenizer_config.json").read_text())
    assert tokenizer_config["eos_token"] == "<|im_end|>" and "local_files_only" not in tokenizer_config

    tokenizer = AutoTokenizer.from_pretrained(to)
    model = AutoModelForCausalLM.from_pretrained(to)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "How do bees make honey?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]

    # the weights are the exported stage's (sft), to bf16 precision, and not the stage before it
    ids = torch.tensor([[151644, 872, 198, 33, 8047, 1281, 25744, 30, 151645]])
    exported = model(input_ids=ids).logits.float()
    logits = {stage: AutoModelForCausalLM.from_pretrained(run_dir / "stages" / stage / "merged")(input_ids=ids).logits.float()
              for stage in ("sft", "domain")}
    assert (exported - logits["sft"]).abs().max() < 5e-2
    assert (exported - logits["domain"]).abs().max() > 0.5  # control: the two stages can be told apart


def test_the_adapter_export_loads_with_peft_on_the_base_it_names(demo_qlora_run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_dir, _ = demo_qlora_run
    to = tmp_path / "adapter"
    result = export(run_dir, "--to", to, "--adapter", "--stage", "sft")
    assert result.exit_code == 0, result.output + repr(result.exception)
    base = json.loads((to / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == str(run_dir / "stages" / "domain" / "merged")  # the stage trained on domain's merged model
    assert (to / "chat_template.jinja").is_file()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), to)
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "stages" / "sft" / "merged")
    ids = torch.randint(0, 1000, (1, 12))
    with torch.no_grad():  # base + adapter = the stage's own merged model
        assert torch.allclose(model(ids).logits, merged(ids).logits, atol=1e-4)


def test_force_replaces_a_folder_that_is_not_empty(demo_qlora_run, tmp_path):
    run_dir, _ = demo_qlora_run
    to = tmp_path / "out"
    (to / "old").mkdir(parents=True)
    refused = export(run_dir, "--to", to, "--adapter", "--stage", "domain")
    assert refused.exit_code == 2 and "exists and is not empty; give another folder, or --force" in refused.output
    foreign = export(run_dir, "--to", to, "--adapter", "--stage", "domain", "--force")
    assert foreign.exit_code == 2 and "--force replaces only a folder an earlier `recipes export` wrote" in foreign.output
    assert (to / "old").is_dir()  # not ours: kept (issue 20)
    ours = tmp_path / "ours"
    assert export(run_dir, "--to", ours, "--adapter", "--stage", "domain").exit_code == 0
    (ours / "old").mkdir()
    result = export(run_dir, "--to", ours, "--adapter", "--stage", "domain", "--force")
    assert result.exit_code == 0, result.output
    assert not (ours / "old").exists() and (ours / "adapter_model.safetensors").is_file()


@pytest.fixture
def unfinished_run(tmp_path):
    """A run folder whose first stage is done (on paper) and whose second was interrupted."""
    run_dir = tmp_path / "run"
    (run_dir / "stages" / "domain" / "merged").mkdir(parents=True)
    (run_dir / "recipe.json").write_text(json.dumps({"model_path": "bundled:tiny-qwen2", "stages": [
        {"name": "domain", "kind": "pretrain", "base": "model"}, {"name": "sft", "kind": "sft", "base": "domain"}]}))
    outputs = {"merged": {"path": "stages/domain/merged", "files": {"model.safetensors": {"size": 1, "sha256": "0"}}}}
    (run_dir / "manifest.json").write_text(json.dumps({"version": 1, "stages": {
        "domain": {"status": "done", "outputs": outputs}, "sft": {"status": "running"}}}))
    return run_dir


@pytest.mark.parametrize("args,message", [
    (["{run}"], "error: --to DIR is required"),
    (["{tmp}/nowhere", "--to", "{tmp}/x"], "error: {tmp}/nowhere: no such run folder"),
    (["{tmp}", "--to", "{tmp}/x"], "error: {tmp}: not a run folder (no manifest.json)"),
    (["{run}", "--to", "{tmp}/x"], "error: stage 'sft' is not done (status: running); run the recipe again"),
    (["{run}", "--to", "{tmp}/x", "--stage", "sfft"], 'error: --stage sfft: no such stage in {run}; did you mean "sft"?'),
    (["{run}", "--to", "{tmp}/x", "--stage", "domain"], "error: {run}/stages/domain/merged: its files changed since"),
    (["{run}", "--to", "{tmp}/x", "--stage", "domain", "--adapter"], "error: stage 'domain': the manifest records no adapter"),
    (["{run}", "--to", "{tmp}/x", "--dtype", "bf8"], "error: --dtype 'bf8': one of bf16, fp16, fp32"),
    (["{run}", "--to", "{tmp}/x", "--max-shard-size", "5 gigs"], "error: --max-shard-size '5 gigs': give a size"),
    (["{run}", "--to", "{tmp}/x", "--adapter", "--dtype", "fp16"], "error: --dtype and --max-shard-size apply to --merged"),
    (["{run}", "--to", "{run}/stages/domain/merged", "--stage", "domain"], "error: --to {run}/stages/domain/merged: inside the run's stages or above"),
])
def test_a_bad_export_is_one_line_and_exit_2(unfinished_run, tmp_path, args, message):
    fill = {"run": unfinished_run, "tmp": tmp_path}
    result = export(*[a.format(**fill) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message.format(**fill)), lines
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("dtype, expected", [(None, torch.float32), ("fp16", torch.float16), ("fp32", torch.float32)])
def test_the_merged_export_is_in_the_dtype_asked_or_as_the_stage_saved_it(demo_run, tmp_path, dtype, expected):
    from safetensors import safe_open

    run_dir, _ = demo_run
    to = tmp_path / "merged"
    result = export(run_dir, "--to", to, "--stage", "domain", *(["--dtype", dtype] if dtype else []))
    assert result.exit_code == 0, result.output + repr(result.exception)
    saved = {}
    for folder in (to, run_dir / "stages" / "domain" / "merged"):
        with safe_open(folder / "model.safetensors", "pt") as weights:
            saved[folder] = {weights.get_tensor(name).dtype for name in weights.keys()}
    assert saved[to] == {expected}
    if dtype is None:  # as the stage saved it (fp32 on CPU)
        assert saved[to] == saved[run_dir / "stages" / "domain" / "merged"]


def test_a_first_stages_adapter_names_the_recipes_model(demo_run, tiny_model, tmp_path):
    run_dir, _ = demo_run
    to = tmp_path / "adapter"
    result = export(run_dir, "--to", to, "--adapter", "--stage", "domain")
    assert result.exit_code == 0, result.output + repr(result.exception)
    base = json.loads((to / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == str(tiny_model)  # the bundled tiny model's cache folder, an absolute path
