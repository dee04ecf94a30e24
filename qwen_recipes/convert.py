"""Qwen-7B v1 (``QWenLMHeadModel``, remote code) -> a native ``Qwen2ForCausalLM`` folder.

Why: v1's remote code does not run on transformers 5 without shims, and once shimmed
``from_pretrained`` silently re-randomises ``attn.c_proj`` in every layer; v1 also ignores
``position_ids`` (packed rows attend across examples). The network is Qwen2's, so a state-dict
conversion is exact (``tests/test_qwen1.py`` compares with logits computed by Qwen's own code).

The mapping, per block ``transformer.h.N``:

- ``attn.c_attn`` (q, k and v stacked, with bias) -> ``self_attn.{q,k,v}_proj`` (weight and bias split
  in three along the output dimension);
- ``attn.c_proj`` -> ``self_attn.o_proj``; ``mlp.w1`` -> ``mlp.up_proj``; ``mlp.w2`` -> ``mlp.gate_proj``
  (v1 computes ``c_proj(w1(x) * silu(w2(x)))``); ``mlp.c_proj`` -> ``mlp.down_proj``;
- ``ln_1`` / ``ln_2`` -> ``input_layernorm`` / ``post_attention_layernorm``;

and ``transformer.wte`` -> ``model.embed_tokens``, ``transformer.ln_f`` -> ``model.norm``, ``lm_head``
stays (untied). Config: Qwen2's ``intermediate_size`` is v1's // 2, ``rope_theta`` is
``rotary_emb_base``, ``max_position_embeddings`` is ``seq_length`` (v1's trained context; its
``max_position_embeddings`` of 32768 is not), ``head_dim`` is ``kv_channels``, as many key/value heads
as heads. v1's dynamic NTK and logn scaling act only at inference beyond ``seq_length``: not carried.

Memory: tensors are read one at a time (safetensors ``safe_open``; ``torch.load(mmap=True,
weights_only=True)`` for .bin) and written one output shard at a time, so converting a 7B needs about
one shard of host memory (``MAX_SHARD_BYTES``), not the model.

The folder also gets Qwen's tokenizer (``qwen_recipes.tokenizer``: the same ids as QWenTokenizer)
with the ChatML template, a generation config, and ``qwen1_source.json`` (where it came from, the
content key, and v1's ``chat_format``: "raw" for a base model, which ``train_tokens = "auto"`` reads).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

BUILD = "qwen1-native-v1"  # bump when the conversion changes: old cache entries are then not used
MAX_SHARD_BYTES = 2 * 1024 ** 3
SOURCE_FILE = "qwen1_source.json"
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
SPECIAL_IDS = {"bos_token_id": 151643, "eos_token_id": 151643, "pad_token_id": 151643}

_BLOCK = re.compile(r"^transformer\.h\.(\d+)\.(.+)$")
_RENAMES = {
    "attn.c_proj.weight": "self_attn.o_proj.weight",
    "attn.c_proj.bias": "self_attn.o_proj.bias",
    "mlp.w1.weight": "mlp.up_proj.weight",
    "mlp.w2.weight": "mlp.gate_proj.weight",
    "mlp.c_proj.weight": "mlp.down_proj.weight",
    "ln_1.weight": "input_layernorm.weight",
    "ln_2.weight": "post_attention_layernorm.weight",
}
_TOP = {"transformer.wte.weight": "model.embed_tokens.weight", "transformer.ln_f.weight": "model.norm.weight",
        "lm_head.weight": "lm_head.weight"}


class ConversionError(ValueError):
    """A v1 checkpoint this converter cannot turn into Qwen2 exactly."""


def read_config(folder: Path) -> dict | None:
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def is_qwen1(folder) -> bool:
    """A folder holding a Qwen v1 (QWenLMHeadModel) checkpoint."""
    config = read_config(Path(folder))
    return config is not None and config.get("model_type") == "qwen"


def qwen2_config(v1: dict) -> dict:
    """The native Qwen2 config.json of a v1 config. Raises ConversionError where Qwen2 cannot be exact."""
    heads, hidden = v1["num_attention_heads"], v1["hidden_size"]
    head_dim = v1.get("kv_channels", hidden // heads)
    if head_dim * heads != hidden:
        raise ConversionError(f"kv_channels x heads ({head_dim} x {heads}) differs from hidden_size {hidden}")
    if float(v1.get("rotary_pct", 1.0)) != 1.0:
        raise ConversionError(f"rotary_pct {v1['rotary_pct']}: Qwen2 rotates every dimension (1.0)")
    if not v1.get("no_bias", True):
        raise ConversionError("no_bias = false: Qwen2 has biases on q, k and v only")
    dtype = v1.get("torch_dtype") or v1.get("dtype") or (
        "bfloat16" if v1.get("bf16") else "float16" if v1.get("fp16") else "float32" if v1.get("fp32") else "bfloat16")
    theta = float(v1.get("rotary_emb_base", 10000))
    return {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "hidden_size": hidden, "intermediate_size": v1["intermediate_size"] // 2,
        "num_hidden_layers": v1["num_hidden_layers"], "num_attention_heads": heads,
        "num_key_value_heads": heads, "head_dim": head_dim, "hidden_act": "silu",
        "max_position_embeddings": v1.get("seq_length", 8192), "rope_theta": theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},
        "rms_norm_eps": v1.get("layer_norm_epsilon", 1e-6), "vocab_size": v1["vocab_size"],
        "tie_word_embeddings": False, "attention_dropout": 0.0, "use_sliding_window": False,
        "sliding_window": None, "max_window_layers": v1["num_hidden_layers"], "use_cache": True,
        "initializer_range": v1.get("initializer_range", 0.02), "dtype": dtype,
        # no pad_token_id: Qwen2 would make it the embedding's padding_idx (a row that never trains)
        **{key: SPECIAL_IDS[key] for key in ("bos_token_id", "eos_token_id") if SPECIAL_IDS[key] < v1["vocab_size"]},
    }


def convert_tensor(name: str, tensor) -> list[tuple[str, object]]:
    """One v1 tensor as the Qwen2 tensors it becomes (c_attn splits into q, k and v)."""
    if name in _TOP:
        return [(_TOP[name], tensor)]
    match = _BLOCK.match(name)
    if match is None:
        raise ConversionError(f"unexpected tensor {name!r} in a v1 checkpoint")
    layer, rest = match.groups()
    prefix = f"model.layers.{layer}."
    if rest in ("attn.c_attn.weight", "attn.c_attn.bias"):
        kind = rest.rsplit(".", 1)[1]
        q, k, v = tensor.chunk(3, dim=0)
        return [(f"{prefix}self_attn.{p}_proj.{kind}", t.contiguous()) for p, t in zip("qkv", (q, k, v))]
    if rest not in _RENAMES:
        raise ConversionError(f"unexpected tensor {name!r} in a v1 checkpoint")
    return [(prefix + _RENAMES[rest], tensor)]


def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's weight files: safetensors if any, else PyTorch .bin files."""
    for pattern in WEIGHT_PATTERNS:
        files = sorted(p for p in Path(folder).glob(pattern) if p.is_file())
        if files:
            return files
    raise ConversionError(f"{folder}: no *.safetensors or pytorch_model*.bin weight files")


def _tensors(file: Path):
    """(name, tensor) of one weight file, read one tensor at a time."""
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)
    else:
        import torch

        state = torch.load(str(file), map_location="cpu", mmap=True, weights_only=True)
        for name in list(state):
            yield name, state.pop(name)


def write_weights(files: list[Path], target: Path, max_shard_bytes: int = MAX_SHARD_BYTES) -> int:
    """Convert and write the tensors, one output shard in memory at a time; returns the tensor count."""
    from safetensors.torch import save_file

    shards: list[dict[str, str]] = []
    pending: dict = {}
    size = total = 0

    def flush():
        nonlocal pending, size
        if pending:
            name = f"part-{len(shards):05d}.safetensors"
            save_file(pending, str(target / name), metadata={"format": "pt"})
            shards.append({key: name for key in pending})
            pending, size = {}, 0

    count = 0
    for file in files:
        for name, tensor in _tensors(file):
            for new_name, new in convert_tensor(name, tensor):
                nbytes = new.numel() * new.element_size()
                if pending and size + nbytes > max_shard_bytes:
                    flush()
                pending[new_name] = new
                size, total, count = size + nbytes, total + nbytes, count + 1
    flush()
    n = len(shards)
    final = {old: ("model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors")
             for i, old in enumerate(f"part-{j:05d}.safetensors" for j in range(n))}
    for old, new in final.items():
        os.rename(target / old, target / new)
    if n > 1:
        weight_map = {key: final[old] for shard in shards for key, old in shard.items()}
        (target / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    return count


def file_digest(file: Path) -> str:
    """sha256 of a file's content. In the HF cache a weight file is a link to blobs/<its sha256>: that
    name is used, not re-read."""
    resolved = Path(file).resolve()
    if resolved != Path(file).absolute() and re.fullmatch(r"[0-9a-f]{64}", resolved.name):
        return resolved.name
    sha = hashlib.sha256()
    with open(resolved, "rb") as handle:
        for block in iter(lambda: handle.read(16 * 1024 * 1024), b""):
            sha.update(block)
    return sha.hexdigest()


def content_key(folder: Path) -> str:
    """What decides the conversion: the config, generation config and weight files' contents."""
    parts = [BUILD]
    for file in [Path(folder) / "config.json", Path(folder) / "generation_config.json", *weight_files(folder)]:
        if file.is_file():
            parts.append(f"{file.name}:{file_digest(file)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def convert_qwen1(source: Path, target: Path) -> Path:
    """Write the native Qwen2 folder of the v1 checkpoint ``source`` at ``target`` (which must not
    exist), atomically: a half-written folder is never seen as the model."""
    source, target = Path(source), Path(target)
    v1 = read_config(source)
    if v1 is None or v1.get("model_type") != "qwen":
        raise ConversionError(f"{source}: not a Qwen v1 checkpoint (config.json model_type is not \"qwen\")")
    config = qwen2_config(v1)
    files = weight_files(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        count = write_weights(files, work)
        (work / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        generation = {}
        if (source / "generation_config.json").is_file():
            generation = json.loads((source / "generation_config.json").read_text(encoding="utf-8"))
        (work / "generation_config.json").write_text(json.dumps(
            {key: value for key, value in {**SPECIAL_IDS, "eos_token_id": generation.get("eos_token_id", 151643)}.items()
             if value < v1["vocab_size"]}, indent=2))
        from qwen_recipes.tokenizer import build_qwen_tokenizer

        build_qwen_tokenizer().save_pretrained(str(work))
        (work / SOURCE_FILE).write_text(json.dumps({
            "converted_from": str(source), "content_key": content_key(source), "build": BUILD,
            "tensors_written": count, "chat_format": generation.get("chat_format"),
            "architectures": v1.get("architectures")}, indent=2))
        os.rename(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def native_model(model_path: str, console=None) -> str:
    """The folder a stage loads: ``model_path`` itself, or for a v1 checkpoint its native Qwen2
    conversion, made once and cached by content under the cache root (``$RECIPES_CACHE``)."""
    if not is_qwen1(model_path):
        return model_path
    from recipes.cache import cache_root

    key = content_key(Path(model_path))
    target = cache_root() / "qwen1-native" / key[:20]

    def say(message: str) -> None:
        if console is not None:
            console.print(f"  {message}", highlight=False)
        import logging

        logging.getLogger("recipes").info(message)

    from recipes.training import distributed

    if not distributed.is_main():  # several processes: the main one converts, the others then read it
        distributed.barrier()
    elif distributed.launched():
        try:
            return _convert_once(model_path, key, target, say)
        finally:
            distributed.barrier()
    return _convert_once(model_path, key, target, say)


def _convert_once(model_path: str, key: str, target: Path, say) -> str:
    if (target / "config.json").is_file() and (target / SOURCE_FILE).is_file():
        say(f"Qwen v1 checkpoint {model_path}: using its native Qwen2 conversion cached in {target} "
            f"(content {key[:12]})")
        return str(target)
    say(f"Qwen v1 checkpoint {model_path}: converting it once to a native Qwen2 folder in {target} "
        f"(content {key[:12]}) ...")
    try:
        convert_qwen1(Path(model_path), target)
    except FileExistsError:
        pass
    except OSError:
        if not (target / "config.json").is_file():  # lost a race to a complete conversion: fine
            raise
    say("conversion done: the stages load it as Qwen2ForCausalLM (no remote code)")
    return str(target)


def convert_to(source: str, target: Path, console) -> Path:
    """``recipes convert SRC --to DIR``: bad input is a RecipeError (one line, exit 2)."""
    from recipes.errors import RecipeError
    from recipes.planning.resolve import resolve_model

    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise RecipeError(f"--to {target}: exists and is not an empty folder; give a new folder")
    folder = Path(resolve_model(source, None, console, "recipes convert", native=False))
    config = read_config(folder)
    if config is None or config.get("model_type") != "qwen":
        found = config.get("model_type") if config else "no readable config.json"
        raise RecipeError(f"{source}: not a Qwen v1 checkpoint (model_type {found!r}, expected \"qwen\"); "
                          "Qwen2 and Qwen2.5 models load natively and need no conversion")
    if target.is_dir():
        target.rmdir()
    console.print(f"converting {folder} (Qwen v1) to a native Qwen2 folder {target} ...", highlight=False)
    try:
        convert_qwen1(folder, target)
    except ConversionError as exc:
        raise RecipeError(f"{source}: {exc}") from None
    count = json.loads((target / SOURCE_FILE).read_text())["tensors_written"]
    console.print(f"wrote {target}: Qwen2ForCausalLM, {count} tensors, Qwen's tokenizer with the ChatML template; "
                  "it loads with AutoModelForCausalLM.from_pretrained, no trust_remote_code", highlight=False)
    return target
