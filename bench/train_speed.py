"""Training speed and memory: what `recipes` runs against a plain HF Trainer + PEFT, in one invocation.

    python bench/train_speed.py [--runs 3] [--sft-records 48] [--pretrain-blocks 8] [--only sft|pretrain]

The bench model (built once, cached under $RECIPES_CACHE or ~/.cache/qwen-recipes): Qwen2, random
init, Qwen's real 151,936-token vocabulary and tokenizer, hidden 256, 4 layers, 4 heads / 2 KV heads,
intermediate 1024, tied embeddings (42.8M parameters); LoRA r16 alpha 16 on every linear layer but
lm_head; fp32 on CPU; batch 4, one epoch, gradient checkpointing as recipes' default (on, both ways).

- SFT: the first ``--sft-records`` records of alpaca_zh_demo.json (LLaMA-Factory's demo data, read by
  our ``alpaca`` format, tokenized by ``recipes.data.tokenization.sft_examples``, cutoff 1024). The same tokens and
  labels go to every variant:
  ``baseline``: transformers' Trainer + peft, transformers' DataCollatorForSeq2Seq (pad to longest),
  the model's own loss. ``ours``: recipes' trainer (StageTrainer, as
  stage.py wires it), the chunked loss, packed rows (``recipes.data.packing``). ``ours-unpacked``: the
  same without packing (padded like the baseline).
- Pre-training: the first ``--pretrain-blocks`` blocks of 1024 tokens of c4_demo.jsonl (our ``text``
  format and ``pretrain_examples``): ``baseline`` against ``ours`` (chunked loss, no packing needed).

Each run is a fresh process; the runs of all variants are interleaved (baseline, ours, ... then again)
so that a change in the machine's load hits all of them alike. Per run: real (non-padding) tokens
trained per second of ``trainer.train()``, and the process's peak RSS (``getrusage(RUSAGE_SELF)``'s
``ru_maxrss`` at its end: imports, data and model loading included). Also real tokens per CPU-second of
the process (all its threads) during ``train()``: on a machine shared with other jobs, wall-clock speed
follows their load, CPU time much less. Printed: per-run rows, medians, and the ratios ours / baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_CONFIG = dict(vocab_size=151936, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                    tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6,
                    bos_token_id=151643, eos_token_id=151643, pad_token_id=151643)
VARIANTS = {"sft": ("baseline", "ours", "ours-unpacked"), "pretrain": ("baseline", "ours")}
CUTOFF = 1024
BATCH = 4


def bench_model() -> Path:
    """The bench model's folder (random init with seed 0, the tiny model's tokenizer), built once."""
    from qwen_recipes.tiny import tiny_qwen2_path
    from recipes.cache import cache_root

    target = cache_root() / "bench-qwen2-h256-l4"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**BENCH_CONFIG))
    work = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(work)
    AutoTokenizer.from_pretrained(tiny_qwen2_path()).save_pretrained(work)
    os.replace(work, target)
    return target


def examples(kind: str, model_dir: Path, data_dir: Path, count: int) -> list[dict]:
    """The same tokens and labels for every variant, through recipes' own formats and data code."""
    from transformers import AutoTokenizer

    from recipes.builtin.alpaca import AlpacaOptions, read_alpaca
    from recipes.builtin.text import TextOptions, read_text
    from recipes.data.tokenization import DataStats, pretrain_examples, sft_examples

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if kind == "sft":
        records = list(read_alpaca(data_dir / "alpaca_zh_demo.json", AlpacaOptions()))[:count]
        return sft_examples(records, tokenizer, CUTOFF, DataStats())
    blocks = pretrain_examples(list(read_text(data_dir / "c4_demo.jsonl", TextOptions())), tokenizer, CUTOFF,
                               DataStats())
    return blocks[:count]


def child(kind: str, variant: str, model_dir: Path, data_dir: Path, count: int, checkpointing: bool) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    from recipes.data.tokenization import PadCollator
    from recipes.data.packing import PackedCollator, pack_examples
    from recipes.plugins.registry import get_registry
    from recipes.training.trainer import StageGuard, StageTrainer

    torch.set_num_threads(os.cpu_count())
    data = examples(kind, model_dir, data_dir, count)
    real_tokens = sum(len(e["input_ids"]) for e in data)
    label_tokens = sum(sum(1 for t in e["labels"][1:] if t != -100) for e in data)
    set_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    args = TrainingArguments(
        output_dir=os.environ.get("TMPDIR", "/tmp") + f"/train_speed_{os.getpid()}", per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=1, num_train_epochs=1, learning_rate=1e-4, lr_scheduler_type="cosine",
        gradient_checkpointing=checkpointing, gradient_checkpointing_kwargs={"use_reentrant": False},
        save_strategy="no", logging_steps=10_000, report_to=[], use_cpu=True, dataloader_pin_memory=False,
        disable_tqdm=True, seed=0, remove_unused_columns=False)
    pad_id = BENCH_CONFIG["pad_token_id"]
    if variant == "baseline":
        from transformers import AutoTokenizer

        collator = DataCollatorForSeq2Seq(AutoTokenizer.from_pretrained(model_dir), padding="longest",
                                          label_pad_token_id=-100)
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collator)
    else:
        rows, collator = data, PadCollator(pad_id)
        if variant == "ours" and kind == "sft":
            rows, _ = pack_examples(data, CUTOFF)
            collator = PackedCollator(pad_id)
        chunked = get_registry().losses["chunked"]
        chunk = {"chunk_size": int(os.environ["BENCH_CHUNK_SIZE"])} if os.environ.get("BENCH_CHUNK_SIZE") else {}
        trainer = StageTrainer(model=model, args=args, train_dataset=rows, data_collator=collator,
                               callbacks=[StageGuard(lambda folder, step: None)],
                               lm_loss=chunked.build(model, chunked.options_model.model_validate(chunk)))
    started, cpu_started = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    losses = [row["train_loss"] for row in trainer.state.log_history if "train_loss" in row]
    return {"kind": kind, "variant": variant, "real_tokens": real_tokens, "label_tokens": label_tokens,
            "steps": trainer.state.global_step, "seconds": seconds, "tokens_per_s": real_tokens / seconds,
            "tokens_per_cpu_s": real_tokens / cpu_seconds,
            "train_loss": losses[-1] if losses else None}


def run_child(kind: str, variant: str, options) -> dict:
    command = [sys.executable, __file__, "--child", kind, variant, "--model-dir", str(options.model_dir),
               "--data-dir", str(options.data_dir), "--count", str(options.counts[kind])]
    if options.no_checkpointing:
        command.append("--no-checkpointing")
    env = {**os.environ, "BENCH_CHUNK_SIZE": str(options.chunk_size or ""), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.run(command, capture_output=True, text=True, env=env)
    if process.returncode != 0:
        raise SystemExit(f"{kind} {variant} failed:\n{process.stderr[-3000:]}")
    result = json.loads(process.stdout.strip().splitlines()[-1])
    result["peak_rss_gb"] = result.pop("_peak_rss_kb") / 1024 ** 2
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sft-records", type=int, default=48)
    parser.add_argument("--pretrain-blocks", type=int, default=8)
    parser.add_argument("--only", choices=sorted(VARIANTS))
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--chunk-size", type=int, help="the chunked loss's chunk_size (default: its default)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        import resource

        result = child(*options.child, options.model_dir, options.data_dir, options.count,
                       not options.no_checkpointing)
        result["_peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps(result))
        return
    options.model_dir = bench_model()
    options.counts = {"sft": options.sft_records, "pretrain": options.pretrain_blocks}
    kinds = [options.only] if options.only else list(VARIANTS)
    print(f"bench: {' '.join(sys.argv)}\nload average before: {os.getloadavg()}; {os.cpu_count()} CPUs")
    results: dict[tuple[str, str], list[dict]] = {}
    for run in range(options.runs):
        for kind in kinds:
            for variant in VARIANTS[kind]:
                row = run_child(kind, variant, options)
                results.setdefault((kind, variant), []).append(row)
                print(f"run {run + 1} {kind:8} {variant:13} {row['real_tokens']:6} real tokens "
                      f"({row['label_tokens']} labels), {row['steps']:3} steps, {row['seconds']:7.1f} s, "
                      f"{row['tokens_per_s']:6.1f} tok/s ({row['tokens_per_cpu_s']:5.1f} per CPU-s), peak RSS {row['peak_rss_gb']:.2f} GB, "
                      f"train loss {row['train_loss']:.4f}", flush=True)
    print(f"load average after: {os.getloadavg()}\n")
    print("| stage | variant | runs | real tokens | median tok/s | median peak RSS GB | tok/s vs baseline "
          "| RSS vs baseline | tok/s ratio per round (median) | tok/CPU-s vs baseline |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind in kinds:
        base = results[(kind, "baseline")]
        base_speed = statistics.median(r["tokens_per_s"] for r in base)
        base_rss = statistics.median(r["peak_rss_gb"] for r in base)
        for variant in VARIANTS[kind]:
            rows = results[(kind, variant)]
            speed = statistics.median(r["tokens_per_s"] for r in rows)
            rss = statistics.median(r["peak_rss_gb"] for r in rows)
            per_cpu = statistics.median(r["tokens_per_cpu_s"] for r in rows) / statistics.median(
                b["tokens_per_cpu_s"] for b in base)
            # the baseline and this variant ran back to back in each round: their ratio is less exposed to
            # the load of a shared machine than the ratio of medians
            paired = [r["tokens_per_s"] / b["tokens_per_s"] for r, b in zip(rows, base)]
            print(f"| {kind} | {variant} | {len(rows)} | {rows[0]['real_tokens']} | {speed:.1f} | {rss:.2f} | "
                  f"{speed / base_speed:.2f}x | {rss / base_rss:.2f}x | "
                  f"{' '.join(f'{p:.2f}' for p in paired)} ({statistics.median(paired):.2f}x) | {per_cpu:.2f}x |")


if __name__ == "__main__":
    main()
