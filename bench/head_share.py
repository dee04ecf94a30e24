"""How much of a LoRA training step the output head is: why speed ratios measured on a small model
(where Qwen's 151,936-wide head is most of the arithmetic) are larger than what a 7B will see.

    python bench/head_share.py [--tokens 1024] [--lora-rank 16]

Counted per position, in multiply-adds x 2 (FLOPs), from each model's config.json (no torch):
- the head: forward 2·h·V, backward to its input 2·h·V (the head is frozen: no weight gradient);
- each decoder layer: its linear layers (q, k, v, o, gate, up, down) forward 2·P and backward to the
  input 2·P (frozen), LoRA (rank r on every linear layer) forward, and backward for both its
  input and its weights; attention scores and values over a causal window of ``--tokens`` / 2 on
  average, backward twice the forward; with gradient checkpointing (recipes' default) the layers'
  forward runs again in the backward.
Printed: per model, the head's share with and without gradient checkpointing. Models: the bundled
tiny model (the demo), the bench model of bench/train_speed.py, and Qwen2.5-7B (its shipped config).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def shares(config: dict, tokens: int, rank: int) -> tuple[float, float]:
    """(the head's share with gradient checkpointing, without)."""
    h, layers, inter = config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]
    kv = config["num_key_value_heads"] * (h // config["num_attention_heads"])
    linears = [(h, h), (h, kv), (h, kv), (h, h), (h, inter), (h, inter), (inter, h)]  # (in, out)
    frozen = sum(i * o for i, o in linears)
    lora = rank * sum(i + o for i, o in linears)
    attention = 2 * 2 * (tokens / 2) * h  # scores and weighted values, forward
    forward = 2 * frozen + 2 * lora + attention
    backward = 2 * frozen + 4 * lora + 2 * attention
    head = 4 * h * config["vocab_size"]
    with_checkpointing = head / (head + layers * (2 * forward + backward))
    without = head / (head + layers * (forward + backward))
    return with_checkpointing, without


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=1024, help="sequence length (attention's cost)")
    parser.add_argument("--lora-rank", type=int, default=16)
    options = parser.parse_args()
    from qwen_recipes.tiny import CONFIG as TINY
    from train_speed import BENCH_CONFIG

    qwen7b = json.loads((ROOT / "qwen_recipes" / "configs" / "Qwen2.5-7B.json").read_text())
    print(f"bench: {' '.join(sys.argv)}")
    for name, config in (("tiny model (demo), hidden 64, 2 layers", TINY),
                         ("bench model (train_speed.py), hidden 256, 4 layers", BENCH_CONFIG),
                         ("Qwen2.5-7B, hidden 3584, 28 layers", qwen7b)):
        checkpointed, plain = shares(config, options.tokens, options.lora_rank)
        print(f"{name}: output head {100 * checkpointed:.1f}% of a step's FLOPs with gradient checkpointing, "
              f"{100 * plain:.1f}% without ({options.tokens} tokens, LoRA r={options.lora_rank})")


if __name__ == "__main__":
    main()
