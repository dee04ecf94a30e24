"""SFT packing efficiency against padding to the longest example of each batch, in the same run.

    python bench/packing_efficiency.py [--data FILE] [--format alpaca|messages|...] [--cutoff 1024] [--batch 4]

``--data`` defaults to ``../shared/data/alpaca_zh_demo.json`` where it exists, else the bundled
``qwen_recipes/data/instructions.jsonl`` (messages format); ``--format`` defaults to ``alpaca`` for
.json files and ``messages`` otherwise.

Both numbers are real tokens / token slots over the same tokenized examples (the real Qwen tokenizer
and chat template, through recipes' own alpaca format and SFT tokenization): packed rows of
``cutoff`` slots (best-fit decreasing, as a stage packs: ``recipes.data.layout.pack_lengths``, timed
beside the in-memory ``pack_examples`` it replaces; both give the same rows), against shuffled batches of ``batch``
examples padded to their longest (what the HF Trainer does without packing).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca_zh_demo.json"
BUNDLED_DATA = Path(__file__).resolve().parents[1] / "qwen_recipes" / "data" / "instructions.jsonl"
DEFAULT_DATA = SHARED_DATA if SHARED_DATA.is_file() else BUNDLED_DATA


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--format", default=None, help="a data format's name (default: alpaca for .json, "
                        "else messages)")
    parser.add_argument("--cutoff", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from qwen_recipes.tiny import tiny_qwen2_path
    import numpy as np

    from recipes.data.layout import pack_lengths
    from recipes.plugins.registry import get_registry
    from recipes.data.tokenization import DataStats, sft_examples
    from recipes.data.inspect import _padded_efficiency
    from recipes.data.packing import pack_examples

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2_path())
    fmt = get_registry().formats[args.format or ("alpaca" if args.data.suffix == ".json" else "messages")]
    records = list(fmt.read(args.data, fmt.options_model()))
    started = time.perf_counter()
    examples = sft_examples(records, tokenizer, args.cutoff, DataStats())
    tokenized = time.perf_counter() - started
    lengths = [len(e["input_ids"]) for e in examples]
    padded = _padded_efficiency(lengths, args.batch, args.seed)
    started = time.perf_counter()
    rows, packing = pack_examples(examples, args.cutoff)
    packed_seconds = time.perf_counter() - started
    started = time.perf_counter()
    members, starts = pack_lengths(np.asarray(lengths), args.cutoff)
    linear_seconds = time.perf_counter() - started
    assert len(starts) - 1 == packing.rows
    print(f"data {args.data.name}: {len(records)} records, {sum(lengths):,} tokens (tokenized in {tokenized:.1f} s)")
    print(f"padded to the longest of each batch of {args.batch}: {padded:.1%} of token slots are real tokens")
    print(f"packed into rows of {args.cutoff}: {packing.rows} rows, {packing.efficiency:.1%} of token slots "
          f"(packed in {packed_seconds * 1000:.0f} ms; the store's linear packer: the same rows in "
          f"{linear_seconds * 1000:.0f} ms)")
    print(f"ratio packed / padded: {packing.efficiency / padded:.2f}x")


if __name__ == "__main__":
    main()
