"""The embedded default model: a tiny Qwen2-architecture model with the genuine Qwen tokenizer.

Built once (about 5 s), then cached under ``$RECIPES_CACHE`` (default ``~/.cache/qwen-recipes``).
Its weights are random: it learns nothing useful, but every code path a real Qwen2.5 takes
(architecture, vocabulary of 151,936, tokenizer, chat template) is the same.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from recipes.cache import cache_root

# Bump when the build changes, so that old caches are not used.
BUILD = "tiny-qwen2-v2"

CONFIG = dict(
    vocab_size=151936,  # Qwen2's padded vocabulary
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    bos_token_id=151643,
    eos_token_id=151643,
    pad_token_id=151643,
    # Wider than a real model's 0.02: with hidden 64 and tied embeddings, logits of random 0.02
    # weights span about 1 nat, so no LoRA could show the loss falling in a minute.
    initializer_range=0.1,
)


def tiny_qwen2_path(console=None) -> Path:
    """The folder of the tiny model, building it on first use."""
    target = cache_root() / BUILD
    if (target / "config.json").is_file() and (target / "tokenizer.json").is_file():
        return target
    if console is not None:
        console.print(f"Building the embedded tiny Qwen2 model (once) in {target} ...")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{BUILD}-", dir=target.parent))
    try:
        build_tiny_qwen2(work)
        try:
            os.rename(work, target)  # atomic: a half-built folder is never seen as the model
        except OSError:
            if not (target / "config.json").is_file():  # lost a race to a complete build: fine
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def build_tiny_qwen2(folder: Path) -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from qwen_recipes.tokenizer import build_qwen_tokenizer

    tokenizer = build_qwen_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**CONFIG))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
