"""The ``gguf`` exporter: ``recipes export RUN --to DIR --gguf TYPE``.

- ``f16``, ``bf16``, ``q8_0``: llama.cpp's own ``convert_hf_to_gguf.py`` writes them in Python, with
  its own gguf-py (``llama_cpp_source``), in a subprocess.
- ``q4_k_m``, ``q5_k_m``: the K-quants need llama.cpp's C++ quantizer: ``llama_cpp.llama_model_quantize``
  when llama-cpp-python is installed, else ``llama-quantize`` on PATH, from an F16 file converted
  first; with neither the export is refused before anything is written, with the commands that do
  it. Never compiled here (compiling is where most GGUF export failures elsewhere come from).
- after every file: the parity gate (``gate``), and with llama-cpp-python installed the next-token
  logits of a few prompts (``logits``); a failure fails the export and nothing is published.
- beside the file, a ``Modelfile`` (``FROM ./NAME.gguf``, the template, stops, system and parameters
  the host builds) and ``convert.log``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from recipes.api import Exporter, ExportContext, RecipeError, hookimpl

from recipes_gguf import gate, logits
from recipes_gguf.llama_cpp_source import gguf_env, llama_cpp_dir

REQUIRES_RECIPES_API = 1
PYTHON_TYPES = ("q8_0", "f16", "bf16")
K_QUANTS = {"q4_k_m": "Q4_K_M", "q5_k_m": "Q5_K_M"}
# GGUF bytes per byte of a bf16/fp16 merged model (an fp32 one is half as large again: an overestimate)
SIZE = {"f16": 1.0, "bf16": 1.0, "q8_0": 0.54, "q4_k_m": 0.31, "q5_k_m": 0.36}


def quantizer() -> str | None:
    """"llama_cpp" (the Python bindings), "llama-quantize" (on PATH), or None."""
    if importlib.util.find_spec("llama_cpp") is not None:
        return "llama_cpp"
    return "llama-quantize" if shutil.which("llama-quantize") else None


def _architecture(merged: Path) -> str:
    config = json.loads((merged / "config.json").read_text(encoding="utf-8"))
    return (config.get("architectures") or ["?"])[0]


def check(variant: str, merged: Path) -> None:
    folder = llama_cpp_dir()
    architecture = _architecture(merged)
    if architecture == "QWenLMHeadModel":  # a run never publishes one: it trains v1 as its native Qwen2 form
        raise RecipeError(f"{merged}: a Qwen v1 folder; export its native Qwen2 form (recipes convert {merged} --to DIR)")
    # the converter's conversion/ package maps each architecture it knows, quoted, to its module
    registered = any(f'"{architecture}"' in path.read_text(encoding="utf-8") for path in (folder / "conversion").glob("*.py"))
    if not registered:
        raise RecipeError(f"{merged}: llama.cpp's converter in {folder} does not know {architecture}; export "
                          "--merged, or set LLAMA_CPP_DIR to a llama.cpp checkout that does")
    if variant in K_QUANTS and quantizer() is None:
        kind = K_QUANTS[variant]
        raise RecipeError(f"--gguf {variant} needs llama.cpp's quantizer, not installed here: export --gguf f16 --to DIR, "
                          f"then run `llama-quantize DIR/NAME-f16.gguf DIR/NAME-{variant}.gguf {kind}` (a llama.cpp "
                          f"build); or export --ollama --to DIR and run `ollama create NAME -f DIR/Modelfile -q "
                          f"{kind[:2].lower()}{kind[2:]}`; or install llama-cpp-python (pip compiles llama.cpp, about "
                          "10 minutes) and export again")


def bytes_needed(variant: str, merged_bytes: int) -> int:
    extra = merged_bytes if variant in K_QUANTS else 0  # the F16 file quantized from
    return int(merged_bytes * SIZE[variant]) + extra


def _run(command: list[str], log: Path, env: dict | None, what: str) -> None:
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        raise RecipeError(f"{what} failed (exit {done.returncode}): {lines[-1] if lines else 'no output'} "
                          f"(the whole output: {log})")


def convert(merged: Path, out: Path, outtype: str, name: str, folder: Path, log: Path) -> None:
    # --model-name: general.name would otherwise be the scratch folder's name
    _run([sys.executable, str(folder / "convert_hf_to_gguf.py"), str(merged), "--outtype", outtype,
          "--outfile", str(out), "--model-name", name], log, gguf_env(folder), "llama.cpp's convert_hf_to_gguf.py")


QUANTIZE = """import sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + sys.argv[3])
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), params))
"""


def quantize(source: Path, out: Path, kind: str, log: Path) -> None:
    # in a subprocess: llama.cpp crashes (SIGSEGV) rather than raising on some inputs
    if quantizer() == "llama_cpp":
        _run([sys.executable, "-c", QUANTIZE, str(source), str(out), kind], log, None, "llama_cpp.llama_model_quantize")
    else:
        _run([shutil.which("llama-quantize"), str(source), str(out), kind], log, None, "llama-quantize")


def write(context: ExportContext) -> list[str]:
    folder = llama_cpp_dir()
    variant = context.variant
    out = context.folder / f"{context.name}-{variant}.gguf"
    # outside the export folder, so that it outlives a failed export
    log = Path(tempfile.gettempdir()) / f"recipes-gguf-{context.name}-{variant}.log"
    log.unlink(missing_ok=True)
    context.console.print(f"converting with llama.cpp's convert_hf_to_gguf.py ({folder}) to {variant}", markup=False)
    if variant in K_QUANTS:
        f16 = context.folder / f".{context.name}-f16.gguf"
        convert(context.merged, f16, "f16", context.name, folder, log)
        quantize(f16, out, K_QUANTS[variant], log)
        f16.unlink()
    else:
        convert(context.merged, out, variant, context.name, folder, log)
    context.console.print("checking the file against the merged weights", markup=False)
    lines = gate.check(out, context.merged, folder)
    if quantizer() == "llama_cpp":
        lines.append(logits.check(out, context.merged, variant))
    (context.folder / "Modelfile").write_text(context.modelfile(f"./{out.name}"), encoding="utf-8")
    shutil.move(log, context.folder / "convert.log")
    final = context.destination / out.name
    return [f"{out.name}: {out.stat().st_size / 2**20:.1f} MiB", *lines,
            f"Ollama: ollama create {context.name} -f {context.destination / 'Modelfile'}",
            f"llama.cpp: llama-cli -m {final} -cnv   (or llama-server -m {final})",
            f"LM Studio: lms import {final}"]


@hookimpl
def register_exporters():
    return [Exporter("gguf", PYTHON_TYPES + tuple(K_QUANTS), check, bytes_needed, write,
                     description="one GGUF file for llama.cpp, Ollama and LM Studio, checked against the merged "
                                 "weights (llama.cpp's own converter)")]
