"""`recipes export --ollama` and `--format` on the demo's run: the Modelfile says how to prompt and
stop the model, an exporter a plugin provides writes through the host (the documented example), and
a folder with bitsandbytes weights, a full disk or a missing plugin stop the export before it writes."""

from __future__ import annotations

import json
import shutil
import types

import numpy as np
import pytest
from click.testing import CliRunner

from recipes.cli import main
from recipes.plugins import registry as registry_module
from recipes.plugins.registry import get_registry

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def export(*args):
    return CliRunner().invoke(main, ["export", *map(str, args)])


def test_ollama_writes_the_merged_folder_and_a_modelfile(demo_run, tmp_path):
    from transformers import AutoTokenizer

    run_dir, _ = demo_run
    to = tmp_path / "ollama"
    result = export(run_dir, "--to", to, "--ollama")
    assert result.exit_code == 0, result.output + repr(result.exception)
    said = result.output.replace("\n", "")
    assert f"ollama create demo-sft -f {to / 'Modelfile'}" in said
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {p.name for p in to.iterdir()}
    text = (to / "Modelfile").read_text()
    assert text.startswith("FROM .\nTEMPLATE \"\"\"")
    assert "<|im_start|>system" in text and "<|im_start|>user\n{{ .Content }}<|im_end|>" in text
    assert f'SYSTEM """{QWEN_SYSTEM}"""' in text  # what the chat template adds when there is none
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("PARAMETER stop")] == [
        'PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|endoftext|>"']
    assert "PARAMETER temperature 0.7" in lines and "PARAMETER num_ctx 2048" in lines
    # the system prompt found by rendering is the one the tokenizer really adds
    rendered = AutoTokenizer.from_pretrained(to).apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert rendered.startswith(f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n")


def test_a_given_system_prompt_and_a_pretraining_stage(demo_run, tmp_path):
    run_dir, _ = demo_run
    result = export(run_dir, "--to", tmp_path / "s", "--ollama", "--system", "You answer about bees.")
    assert result.exit_code == 0, result.output
    assert 'SYSTEM """You answer about bees."""' in (tmp_path / "s" / "Modelfile").read_text()
    result = export(run_dir, "--to", tmp_path / "d", "--ollama", "--stage", "domain")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "d" / "Modelfile").read_text()
    assert 'TEMPLATE """{{ .Prompt }}"""' in text and "SYSTEM" not in text and "<|im_end|>" not in text


@pytest.fixture
def with_example_exporter(monkeypatch):
    from test_hook_docs import _example, _sections

    example = _example(_sections()["register_exporters"])
    monkeypatch.setattr(registry_module, "_cached", get_registry(extra_plugins=(example,)))


def test_the_documented_exporter_writes_through_recipes_export(demo_run, tmp_path, with_example_exporter):
    from safetensors.torch import load_file

    run_dir, _ = demo_run
    to = tmp_path / "npz"
    result = export(run_dir, "--to", to, "--format", "npz:fp16")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "exported npz fp16 of stage 'sft'" in result.output and "weights.npz: 26 tensors (fp16)" in result.output
    assert sorted(p.name for p in to.iterdir()) == [".written-by-recipes", "weights.npz"]  # the merged scratch is gone
    merged = load_file(run_dir / "stages" / "sft" / "merged" / "model.safetensors")
    written = np.load(to / "weights.npz")
    for name, tensor in merged.items():
        assert np.array_equal(written[name], tensor.float().numpy().astype(np.float16)), name


def test_an_unknown_format_and_a_missing_gguf_plugin(demo_run, tmp_path, monkeypatch, with_example_exporter):
    run_dir, _ = demo_run
    result = export(run_dir, "--to", tmp_path / "x", "--format", "npy")
    assert result.exit_code == 2 and result.output.startswith(
        "error: --format 'npy': no such export format (installed: "), result.output
    assert 'did you mean "npz"?' in result.output
    monkeypatch.setenv("RECIPES_PLUGINS", "qwen")  # the host and Qwen's family only
    monkeypatch.setattr(registry_module, "_cached", None)
    result = export(run_dir, "--to", tmp_path / "x", "--gguf", "q8_0")
    assert result.exit_code == 2
    assert result.output.strip() == ("error: --gguf needs the recipes-gguf plugin: pip install recipes-gguf (in this "
                                     "repository: pip install -e plugins/recipes-gguf)")
    result = export(run_dir, "--to", tmp_path / "x", "--system", "hi")
    assert result.output.startswith("error: --system goes into an Ollama Modelfile: use it with --ollama or --gguf")
    assert not (tmp_path / "x").exists()


def test_a_bitsandbytes_folder_is_refused(demo_run, tmp_path):
    from recipes.run.manifest import Manifest
    from recipes.run.publish import checksums

    run_dir = shutil.copytree(demo_run[0], tmp_path / "run")
    merged = run_dir / "stages" / "sft" / "merged"
    config = json.loads((merged / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (merged / "config.json").write_text(json.dumps(config))
    manifest = Manifest.load(run_dir)  # as if the stage had published it so
    manifest.stage("sft")["outputs"]["merged"]["files"] = checksums(merged)
    manifest.save()
    for args in (["--ollama"], ["--gguf", "q8_0"]):
        result = export(run_dir, "--to", tmp_path / "x", *args)
        assert result.exit_code == 2, result.output
        assert result.output.startswith(f"error: {merged / 'config.json'}: stage 'sft' holds bitsandbytes weights; "
                                        "GGUF and Ollama need plain ones: merge first"), result.output
    assert export(run_dir, "--to", tmp_path / "x", "--stage", "domain", "--ollama").exit_code == 0  # the control


def test_free_disk_is_checked_before_writing(demo_run, tmp_path, monkeypatch):
    from recipes.outputs import export as export_module

    run_dir, _ = demo_run
    needed = sum(p.stat().st_size for p in (run_dir / "stages" / "sft" / "merged").iterdir())
    monkeypatch.setattr(export_module, "free_bytes", lambda folder: needed // 2)
    result = export(run_dir, "--to", tmp_path / "x", "--ollama")
    assert result.exit_code == 2
    assert result.output.startswith(f"error: --to {tmp_path / 'x'}: {needed // 2 / 2**30:.2f} GiB free on that disk; "
                                    f"the export needs about {int(needed * 1.05) / 2**30:.2f} GiB"), result.output
    assert not (tmp_path / "x").exists()
    monkeypatch.setattr(export_module, "free_bytes", lambda folder: needed * 2)  # the control
    assert export(run_dir, "--to", tmp_path / "x", "--ollama").exit_code == 0


def test_the_run_report_says_how_to_run_the_last_stage_elsewhere(demo_run):
    from recipes.outputs.report import read_run, report_markdown

    run_dir, _ = demo_run
    text = report_markdown(read_run(run_dir), [])  # read only: the shared run is not written to
    section = text[text.index("## Run the model elsewhere"):]
    assert f"`recipes export {run_dir} --to {run_dir}-sft-ollama --ollama`" in section
    assert f"`vllm serve {run_dir}-sft`" in section and "--gguf q8_0" in section and "lms import" in section
    from recipes.outputs.handoff import handoff_markdown

    assert handoff_markdown({"run_dir": "r", "stages": [{"stage": "a", "status": "failed"}]}) == []
