"""The parity gate: a GGUF file read back and compared with the HF folder it was converted from.

Runs as ``python -m recipes_gguf.gate GGUF HF_FOLDER`` with llama.cpp's own gguf-py first on the path
(``llama_cpp_source.gguf_env``), so that the file is read by the gguf-py of the converter that wrote
it, and prints one JSON object: ``problems`` (empty when the file passes) and ``compared`` (what was
checked, in words). ``check`` is the caller's side: it runs that and raises when a problem is found.

What is compared:

- metadata: ``general.architecture`` is the HF ``model_type`` (a Qwen v1 run exports its native Qwen2
  form), and the block count, widths and head counts are the config's;
- tokenizer: every token of tokenizer.json at its id, the vocabulary padded to the config's
  ``vocab_size``, the chat template byte for byte, the EOS id the tokenizer's ``eos_token``;
- tensors: as many as the HF weights, each HF tensor under its GGUF name (gguf-py's own name map)
  with the same shape, and every dequantized value within the bound of the type the tensor is
  stored in (``bound``): exact for F32, half a unit in the last place for F16 and BF16, half a
  quantization step plus the rounding of the block's fp16 scale for Q8_0, and for the K-quants and
  legacy 4/5-bit types an RMS error under 2^(2-bits) of the tensor's RMS (a corrupted tensor is off
  by about its own RMS).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from recipes.api import RecipeError

# config.json key -> GGUF key under the architecture's prefix
SHAPE_KEYS = (("num_hidden_layers", "block_count"), ("hidden_size", "embedding_length"),
              ("intermediate_size", "feed_forward_length"), ("num_attention_heads", "attention.head_count"),
              ("num_key_value_heads", "attention.head_count_kv"))
BITS = {"Q2": 2, "Q3": 3, "Q4": 4, "Q5": 5, "Q6": 6}
Q8_BLOCK = 32


def bound(kind: str, hf):
    """The largest error allowed at each element (an array like ``hf``), or a float for an RMS
    bound (the types whose rounding depends on scales we do not recompute)."""
    import numpy as np

    magnitude = np.abs(hf)
    if kind == "F32":
        return np.zeros_like(hf)
    if kind == "F16":  # half an ulp: 2^-11 relative, 2^-25 below fp16's normal range
        return magnitude * 2.0 ** -11 + 2.0 ** -25
    if kind == "BF16":
        return magnitude * 2.0 ** -8 + 2.0 ** -133
    if kind == "Q8_0":
        # per block of 32: scale d = max|x| / 127 stored as fp16; x ~ d16 * round(x / d), so the error is
        # at most d / 2 (rounding) + 127 |d - d16| (the scale's own fp16 rounding)
        blocks = magnitude.reshape(-1, Q8_BLOCK)
        d = blocks.max(axis=1, keepdims=True) / 127
        per_block = d / 2 + 127 * np.maximum(d * 2.0 ** -11, 2.0 ** -25) + d * 1e-4  # + float32 arithmetic
        return np.broadcast_to(per_block, blocks.shape).reshape(hf.shape)
    bits = BITS.get(kind[:2])
    if bits is None:
        raise ValueError(f"no error bound for GGUF type {kind}")
    return float(np.sqrt(np.mean(hf.astype(np.float64) ** 2))) * 2.0 ** (2 - bits)


def _hf_tensors(folder: Path):
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(path, framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)


def _field(reader, key):
    found = reader.fields.get(key)
    return None if found is None else found.contents()


def _tokenizer_problems(reader, folder: Path, config: dict) -> list[str]:
    problems = []
    tokens = _field(reader, "tokenizer.ggml.tokens") or []
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    ids = dict(spec["model"]["vocab"])
    ids.update({t["content"]: t["id"] for t in spec.get("added_tokens", [])})
    wrong = [f"{token!r} (id {i})" for token, i in ids.items() if i >= len(tokens) or tokens[i] != token]
    if wrong:
        problems.append(f"{len(wrong)} token(s) differ from tokenizer.json, first {wrong[0]}")
    if len(tokens) != config.get("vocab_size", len(tokens)):
        problems.append(f"{len(tokens)} tokens, the config's vocab_size is {config.get('vocab_size')}")
    template_file = folder / "chat_template.jinja"
    settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    template = template_file.read_text(encoding="utf-8") if template_file.is_file() else settings.get("chat_template")
    if template and _field(reader, "tokenizer.chat_template") != template:
        problems.append("tokenizer.chat_template is not the folder's chat template")
    eos = settings.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    found_eos = _field(reader, "tokenizer.ggml.eos_token_id")
    if eos is not None and found_eos != ids.get(eos):
        problems.append(f"tokenizer.ggml.eos_token_id {found_eos}, the tokenizer's eos {eos!r} is {ids.get(eos)}")
    return problems


def compare(gguf_path: Path, folder: Path) -> dict:
    """Read ``gguf_path`` back and compare it with the HF ``folder``: {"problems": [...], "compared": [...]}."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(gguf_path)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    problems, compared = [], []
    arch = _field(reader, "general.architecture")
    if arch != config.get("model_type"):
        problems.append(f"general.architecture is {arch!r}, the model's model_type is {config.get('model_type')!r}")
    for hf_key, key in SHAPE_KEYS:
        found = _field(reader, f"{arch}.{key}")
        if hf_key in config and found != config[hf_key]:
            problems.append(f"{arch}.{key} is {found}, config.json's {hf_key} is {config[hf_key]}")
    problems += _tokenizer_problems(reader, folder, config)
    compared.append(f"metadata (architecture {arch}, {len(SHAPE_KEYS)} shape keys, every token, chat template, "
                    f"EOS id {_field(reader, 'tokenizer.ggml.eos_token_id')})")

    arches = {name: value for value, name in gguf.MODEL_ARCH_NAMES.items()}
    names = gguf.get_tensor_name_map(arches[arch], config["num_hidden_layers"]) if arch in arches else None
    stored = {t.name: t for t in reader.tensors}
    seen, kinds, worst = 0, {}, (0.0, "")
    for name, tensor in _hf_tensors(folder):
        seen += 1
        target = names.get_name(name, try_suffixes=(".weight", ".bias")) if names else None
        found = stored.get(target)
        if found is None:
            problems.append(f"HF tensor {name}: not in the GGUF (looked for {target})")
            continue
        hf = tensor.float().numpy()
        shape = [int(n) for n in reversed(found.shape)]
        if shape != list(hf.shape):
            problems.append(f"{target}: shape {shape}, HF {name} is {list(hf.shape)}")
            continue
        kind = found.tensor_type.name
        kinds[kind] = kinds.get(kind, 0) + 1
        values = gguf.quants.dequantize(found.data, found.tensor_type).reshape(hf.shape)
        error = np.abs(values - hf)
        allowed = bound(kind, hf)
        if isinstance(allowed, float):
            rms = float(np.sqrt(np.mean(error.astype(np.float64) ** 2)))
            ratio = rms / allowed if allowed else (0.0 if rms == 0 else float("inf"))
            if not ratio <= 1:
                problems.append(f"{target} ({kind}): RMS error {rms:.3g} beyond its bound {allowed:.3g}")
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = np.where(error == 0, 0.0, error / allowed)
            ratio = float(ratios.max()) if ratios.size else 0.0
            over = ~(ratios <= 1)  # NaN (a NaN or inf read back) counts as over
            if over.any():
                at = np.unravel_index(int(np.argmax(over)), hf.shape)
                problems.append(f"{target} ({kind}): {int(over.sum())} of {hf.size} values beyond the {kind} bound, "
                                f"first at {list(map(int, at))}: {float(values[at]):.6g} where HF {name} has "
                                f"{float(hf[at]):.6g}")
        if ratio > worst[0]:
            worst = (ratio, target)
    if seen != len(reader.tensors):
        problems.append(f"{len(reader.tensors)} tensors in the GGUF, {seen} in the HF folder")
    types = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    compared.append(f"{seen} tensors dequantized against the HF weights ({types}); worst {worst[1] or '-'} at "
                    f"{worst[0]:.0%} of its bound")
    return {"problems": problems, "compared": compared}


def check(gguf_path: Path, folder: Path, llama_cpp: Path) -> list[str]:
    """Run the gate in a subprocess with ``llama_cpp``'s gguf-py; what was compared, a line each.
    Raises ``RecipeError`` naming every problem when the file does not match the folder."""
    from recipes_gguf.llama_cpp_source import gguf_env

    done = subprocess.run([sys.executable, "-m", "recipes_gguf.gate", str(gguf_path), str(folder)],
                          env=gguf_env(llama_cpp), capture_output=True, text=True)
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RecipeError(f"the parity gate could not read {gguf_path.name} (exit {done.returncode}): {last}") from None
    if result["problems"]:
        raise RecipeError([f"parity gate failed: {gguf_path.name} does not match the merged weights: {p}"
                           for p in result["problems"]] + [f"the gate compared {c}" for c in result["compared"]])
    return [f"parity gate passed: {c}" for c in result["compared"]]


if __name__ == "__main__":
    print(json.dumps(compare(Path(sys.argv[1]), Path(sys.argv[2]))))
