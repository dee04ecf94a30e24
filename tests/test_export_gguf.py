"""`recipes export --gguf` (the recipes-gguf plugin) on the demo's run: the file llama.cpp's converter
writes is read back by llama.cpp's own gguf-py, here independently of the plugin's parity gate, and
matches the merged weights within the type's bound; the gate itself fails on a corrupted tensor."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from recipes.cli import main
from recipes.errors import RecipeError

# Reads a GGUF with llama.cpp's gguf-py and prints, per tensor, its type and the largest error of its
# dequantized values against the HF weights, in units of the type's rounding step (Q8_0: the block's
# scale, max|x|/127; F16: the exact fp16 rounding of the HF value is required)
READ_BACK = textwrap.dedent("""
    import json, sys
    import gguf, numpy as np
    from safetensors.numpy import load_file
    reader = gguf.GGUFReader(sys.argv[1])
    hf = load_file(sys.argv[2])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, 2)
    stored = {t.name: t for t in reader.tensors}
    rows = {}
    for name, tensor in hf.items():
        x = tensor.astype(np.float32)
        t = stored[names.get_name(name, try_suffixes=(".weight", ".bias"))]
        y = gguf.quants.dequantize(t.data, t.tensor_type).reshape(x.shape)
        kind = t.tensor_type.name
        if kind == "Q8_0":
            step = np.abs(x).reshape(-1, 32).max(axis=1, keepdims=True) / 127
            error = np.abs(y - x).reshape(-1, 32)
            # a block of zeros (an embedding row never trained) must read back as zeros
            worst = float(np.divide(error, step, out=np.where(error > 0, np.inf, 0.0), where=step > 0).max())
        elif kind == "F16":
            worst = float(np.abs(y - x.astype(np.float16).astype(np.float32)).max())
        else:
            worst = float(np.abs(y - x).max())
        rows[name] = [kind, worst]
    print(json.dumps({"arch": reader.fields["general.architecture"].contents(), "count": len(reader.tensors),
                      "eos": reader.fields["tokenizer.ggml.eos_token_id"].contents(), "tensors": rows}))
""")

CORRUPT = textwrap.dedent("""
    import sys
    import gguf
    reader = gguf.GGUFReader(sys.argv[1], "r+")
    [tensor] = [t for t in reader.tensors if t.name == sys.argv[2]]
    tensor.data[3, 10] = tensor.data[3, 10] ^ 0x40  # one quantized value of one block, written through the memmap
    reader.data.flush()
""")


def export(*args):
    return CliRunner().invoke(main, ["export", *map(str, args)])


def gguf_python(script: str, *args) -> str:
    from recipes_gguf.llama_cpp_source import gguf_env, llama_cpp_dir

    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], env=gguf_env(llama_cpp_dir()),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def q8_0(demo_run, tmp_path_factory):
    run_dir, _ = demo_run
    to = tmp_path_factory.mktemp("gguf") / "q8_0"
    result = export(run_dir, "--to", to, "--gguf", "q8_0")
    assert result.exit_code == 0, result.output + repr(result.exception)
    return to, result.output


def test_q8_0_from_the_demo_run_reads_back_as_qwen2_within_its_bound(demo_run, q8_0):
    run_dir, _ = demo_run
    to, output = q8_0
    assert "exported gguf q8_0 of stage 'sft'" in output
    assert "parity gate passed: 26 tensors dequantized against the HF weights" in output.replace("\n", " ")
    assert sorted(p.name for p in to.iterdir()) == [".written-by-recipes", "Modelfile", "convert.log", "demo-sft-q8_0.gguf"]
    merged = run_dir / "stages" / "sft" / "merged" / "model.safetensors"
    read = json.loads(gguf_python(READ_BACK, to / "demo-sft-q8_0.gguf", merged))
    assert read["arch"] == "qwen2" and read["count"] == len(read["tensors"]) == 26
    assert read["eos"] == 151645  # <|im_end|>: an SFT export stops at the end of its turn
    kinds = {kind for kind, _ in read["tensors"].values()}
    assert kinds == {"Q8_0", "F32"}
    for name, (kind, worst) in read["tensors"].items():
        # Q8_0: half a step from rounding, plus the fp16 rounding of the block's scale (127 * 2^-11 steps)
        assert worst <= (0.5 + 127 * 2 ** -11 + 1e-4 if kind == "Q8_0" else 0.0), (name, kind, worst)
    modelfile = (to / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./demo-sft-q8_0.gguf\n") and 'PARAMETER stop "<|im_end|>"' in modelfile


def test_f16_is_the_merged_weights_rounded_to_fp16(demo_run, tmp_path):
    run_dir, _ = demo_run
    to = tmp_path / "f16"
    result = export(run_dir, "--to", to, "--gguf", "f16", "--stage", "domain")
    assert result.exit_code == 0, result.output + repr(result.exception)
    merged = run_dir / "stages" / "domain" / "merged" / "model.safetensors"
    read = json.loads(gguf_python(READ_BACK, to / "demo-domain-f16.gguf", merged))
    assert read["arch"] == "qwen2" and read["count"] == 26
    assert {kind for kind, _ in read["tensors"].values()} == {"F16", "F32"}
    assert all(worst == 0.0 for _, worst in read["tensors"].values()), read["tensors"]
    assert 'TEMPLATE """{{ .Prompt }}"""' in (to / "Modelfile").read_text()  # a pre-training stage continues text


def test_the_parity_gate_fails_on_a_corrupted_tensor(demo_run, q8_0, tmp_path):
    from recipes_gguf import gate
    from recipes_gguf.llama_cpp_source import llama_cpp_dir

    run_dir, _ = demo_run
    merged = run_dir / "stages" / "sft" / "merged"
    good = q8_0[0] / "demo-sft-q8_0.gguf"
    bad = shutil.copy(good, tmp_path / "bad.gguf")
    gguf_python(CORRUPT, bad, "blk.1.attn_q.weight")
    assert "parity gate passed: 26 tensors" in q8_0[1]  # the control: the file as written passed the same gate
    with pytest.raises(RecipeError) as failed:
        gate.check(bad, merged, llama_cpp_dir())
    problems = [str(p) for p in failed.value.problems]
    assert len(problems) == 3, problems  # the one tensor, then what the gate compared
    assert problems[0].startswith("parity gate failed: bad.gguf does not match the merged weights: blk.1.attn_q.weight "
                                  "(Q8_0): 1 of 4096 values beyond the Q8_0 bound, first at [3, 8]"), problems[0]
    assert problems[2].startswith("the gate compared 26 tensors dequantized against the HF weights (11 F32, 15 Q8_0)")


def test_k_quants_without_a_quantizer_are_refused_with_the_commands(demo_run, tmp_path):
    run_dir, _ = demo_run
    assert shutil.which("llama-quantize") is None
    result = export(run_dir, "--to", tmp_path / "k", "--gguf", "q4_k_m")
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()
    assert "`llama-quantize DIR/NAME-f16.gguf DIR/NAME-q4_k_m.gguf Q4_K_M`" in line
    assert "`ollama create NAME -f DIR/Modelfile -q q4_K_M`" in line
    assert not (tmp_path / "k").exists()


@pytest.mark.parametrize("args,message", [
    (["--gguf", "q3"], "error: --gguf 'q3': one of q8_0, f16, bf16, q4_k_m, q5_k_m"),
    (["--gguf", "q8_0", "--adapter"], "error: --format/--gguf converts the merged model: leave out --adapter"),
    (["--gguf", "q8_0", "--format", "gguf:f16"], "error: --gguf TYPE is --format gguf:TYPE: give one of them"),
])
def test_a_bad_gguf_request_is_one_line(demo_run, tmp_path, args, message):
    run_dir, _ = demo_run
    result = export(run_dir, "--to", tmp_path / "x", *args)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [result.output.strip()] and result.output.startswith(message), result.output


def test_without_the_converter_the_error_names_the_command(demo_run, tmp_path, monkeypatch):
    run_dir, _ = demo_run
    monkeypatch.setenv("LLAMA_CPP_DIR", str(tmp_path))
    result = export(run_dir, "--to", tmp_path / "x", "--gguf", "q8_0")
    assert result.exit_code == 2
    assert result.output.startswith(f"error: LLAMA_CPP_DIR={tmp_path}: no convert_hf_to_gguf.py with gguf-py/ there")
