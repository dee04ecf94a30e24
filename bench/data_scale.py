"""Data preparation at scale: ours (`recipes prepare`: streamed, parallel, into the token store)
against the pipeline LLaMA-Factory and axolotl use (HF datasets: ``load_dataset`` ->
``Dataset.map(tokenize, batched=True, num_proc=2)`` -> a batched "join and cut into blocks" map for
pre-training; Arrow files on disk), in one run, on the same generated data.

    python bench/data_scale.py [--source DIR] [--sizes pt25,pt100,sft20k,sft100k] [--workers 2] [--keep DIR]

Data is generated from ``--source`` (default ``../shared/data`` if present, else the bundled samples):
pre-training JSONL of about 25, 100, 400 and 2000 MB (``pt25`` ... ``pt2000``) from its documents,
and SFT sets of 20k, 100k, 300k alpaca records (``sft20k`` ...) from its alpaca records, each
document or instruction made distinct by a counter and a shuffle of its sentences. For each size it
prints: wall time, CPU time of the whole process tree (user + system, from wait4: it depends less on
what else runs on a shared machine than the wall does), peak PSS of the whole process tree (sampled
from /proc/*/smaps_rollup every 0.1 s; PSS divides the pages forked workers share among them) and the
peak sum of RSS, bytes on disk of the prepared data, ours / baseline ratios, ours again with the store
ready (a cache hit: the same command again), and the load average before and after each size.
``--no-baseline`` runs ours only (the 2 GB size: its preparation time and memory).

For pre-training sizes it also measures the limit: the Rust tokenizer alone (``tokenizers``'
``encode_batch``, and ``encode_batch_fast``, which skips the offsets) over the same documents,
already in memory, in batches of the size ours tokenizes, with the tokenizer's own thread pool on
every core; only the encoding is timed. It prints ours / limit in tokens per second (the whole
``recipes prepare`` command on a fresh store, start-up included) and in tokens per CPU-second, for two
runs of ours: the model's first use (a fresh cache: transformers imported to build the tokenizer, which
is then kept) and a fresh store with that tokenizer kept (every later preparation of documents with the
model). Ours runs as a user runs it, ``TOKENIZERS_PARALLELISM`` unset; the baseline with it "false"
(its ``num_proc`` processes). Everything printed also goes to ``bench/results/data_scale_<sizes>_<time>.txt``.
The tokenizer is the real Qwen tokenizer (the tiny model's); cutoff 1024 (pre-training blocks and SFT).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SIZES = {"pt25": 25, "pt50": 50, "pt100": 100, "pt400": 400, "pt2000": 2000, "sft20k": 20_000, "sft100k": 100_000,
         "sft300k": 300_000}
CUTOFF = 1024

BASELINE = r'''
import sys, os
from datasets import load_dataset
from transformers import AutoTokenizer
kind, data, model, cache, workers, cutoff = sys.argv[1:7]
workers, cutoff = int(workers), int(cutoff)
tok = AutoTokenizer.from_pretrained(model)
ds = load_dataset("json", data_files=data, split="train", cache_dir=cache)
if kind == "pt":
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    def tokenize(batch):
        return {"input_ids": [ids + [eos] for ids in tok(batch["text"], add_special_tokens=False)["input_ids"]]}
    ds = ds.map(tokenize, batched=True, num_proc=workers, remove_columns=ds.column_names)
    def group(batch):
        stream = [t for ids in batch["input_ids"] for t in ids]
        blocks = [stream[i:i + cutoff] for i in range(0, len(stream), cutoff)]
        return {"input_ids": blocks, "labels": [list(b) for b in blocks]}
    ds = ds.map(group, batched=True, num_proc=workers)
else:
    def tokenize(batch):
        out = {"input_ids": [], "labels": []}
        for instruction, extra, answer in zip(batch["instruction"], batch["input"], batch["output"]):
            user = f"{instruction}\n{extra}" if extra else instruction
            prompt = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                             add_generation_prompt=True)
            full = tok.apply_chat_template([{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
                                           tokenize=False)
            p = tok(prompt, add_special_tokens=False)["input_ids"]
            ids = tok(full, add_special_tokens=False)["input_ids"][:cutoff]
            out["input_ids"].append(ids)
            out["labels"].append(([-100] * len(p) + ids[len(p):])[:cutoff])
        return out
    ds = ds.map(tokenize, batched=True, num_proc=workers, remove_columns=ds.column_names)
print("rows", len(ds))
'''

LIMIT = r'''
import json, os, resource, sys, time
from tokenizers import Tokenizer
data, model, method = sys.argv[1:4]
tok = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
batches, batch, size = [], [], 0
with open(data, encoding="utf-8") as handle:
    for line in handle:
        batch.append(json.loads(line)["text"])
        size += len(batch[-1])
        if size >= 4 << 20:
            batches.append(batch)
            batch, size = [], 0
batches.append(batch)
encode = getattr(tok, method)
usage, started, tokens = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), 0
for batch in batches:
    tokens += sum(len(e.ids) for e in encode(batch, add_special_tokens=False))
seconds, after = time.monotonic() - started, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"tokens": tokens, "seconds": seconds,
                  "cpu": after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime}))
'''


def memory_of_tree(pid: int) -> tuple[int, int]:
    """(PSS, sum of RSS) in bytes of ``pid`` and all its descendants, now."""
    pss = rss = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return pss, rss


def pss_of_tree(pid: int) -> int:
    """Bytes of PSS of ``pid`` and all its descendants, now."""
    return memory_of_tree(pid)[0]


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(command: list[str], env: dict) -> dict:
    started = time.monotonic()
    log = tempfile.TemporaryFile("w+")  # not a pipe: a chatty child (progress bars) never blocks on it
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    peak = peak_rss = 0
    while True:  # wait4: the CPU time of the child and of every process of its tree it reaped
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        pss, rss = memory_of_tree(process.pid)
        peak, peak_rss = max(peak, pss), max(peak_rss, rss)
        time.sleep(0.1)
    seconds = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    log.seek(0)
    output = log.read()
    log.close()
    if process.returncode != 0:
        raise SystemExit(f"failed ({process.returncode}): {' '.join(command)}\n{output[-3000:]}")
    return {"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime, "pss": peak, "rss": peak_rss,
            "output": output}


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def _sentences(text: str) -> list[str]:
    parts = [p for p in text.replace("。", "。\n").replace(". ", ".\n").splitlines() if p.strip()]
    return parts or [text]


def source_documents(source: Path) -> list[str]:
    for name in ("c4_demo.jsonl", "domain_corpus.jsonl"):
        if (source / name).is_file():
            return [json.loads(line)["text"] for line in (source / name).read_text().splitlines() if line.strip()]
    raise SystemExit(f"{source}: no c4_demo.jsonl or domain_corpus.jsonl to generate pre-training data from")


def source_instructions(source: Path) -> list[dict]:
    records = []
    for name in ("alpaca_zh_demo.json", "alpaca_en_demo.json"):
        if (source / name).is_file():
            records += json.loads((source / name).read_text())
    if not records and (source / "instructions.jsonl").is_file():  # the bundled sample: messages format
        for line in (source / "instructions.jsonl").read_text().splitlines():
            messages = json.loads(line)["messages"]
            users = [m["content"] for m in messages if m["role"] == "user"]
            answers = [m["content"] for m in messages if m["role"] == "assistant"]
            records.append({"instruction": users[-1], "input": "", "output": answers[-1]})
    if not records:
        raise SystemExit(f"{source}: no alpaca_*_demo.json or instructions.jsonl to generate SFT data from")
    return records


def generate_pretrain(path: Path, megabytes: int, documents: list[str]) -> None:
    rng, size, index = random.Random(0), 0, 0
    with open(path, "w") as handle:
        while size < megabytes * 1_000_000:
            sentences = _sentences(rng.choice(documents))
            rng.shuffle(sentences)
            line = json.dumps({"text": f"{index}. " + " ".join(sentences)}, ensure_ascii=False) + "\n"
            handle.write(line)
            size += len(line.encode())
            index += 1


def generate_sft(path: Path, count: int, records: list[dict]) -> None:
    rng = random.Random(0)
    with open(path, "w") as handle:
        for index in range(count):
            record = dict(rng.choice(records))
            sentences = _sentences(record["output"])
            rng.shuffle(sentences)
            record = {"instruction": f"{record['instruction']} ({index})", "input": record.get("input", ""),
                      "output": " ".join(sentences)}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


RECIPE = """[model]
path = "{model}"
[[stages]]
name = "s"
kind = "{kind}"
cutoff_len = {cutoff}
packing = {packing}
[[stages.data]]
path = "{data}"
format = "{format}"
"""


def run_size(name: str, work: Path, model: Path, source: Path, workers: int, baseline_too: bool = True) -> dict:
    kind = "pt" if name.startswith("pt") else "sft"
    data = work / f"{name}.jsonl"
    if not data.is_file():
        if kind == "pt":
            generate_pretrain(data, SIZES[name], source_documents(source))
        else:
            generate_sft(data, SIZES[name], source_instructions(source))
    recipe = work / f"{name}.toml"
    recipe.write_text(RECIPE.format(model=model, kind="pretrain" if kind == "pt" else "sft", cutoff=CUTOFF,
                                    packing="false" if kind == "pt" else "true", data=data,
                                    format="text" if kind == "pt" else "alpaca"))
    ours_cache, base_cache = work / f"{name}-ours", work / f"{name}-baseline"
    for folder in (ours_cache, base_cache):
        shutil.rmtree(folder, ignore_errors=True)
    env = {**os.environ, "RECIPES_CACHE": str(ours_cache), "TOKENIZERS_PARALLELISM": "false",
           "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    # ours as a user runs it: TOKENIZERS_PARALLELISM unset (its documents go to the tokenizer's own threads)
    ours_env = {k: v for k, v in env.items() if k != "TOKENIZERS_PARALLELISM"}
    command = [sys.executable, "-m", "recipes", "prepare", str(recipe), "--workers", str(workers)]
    cold = measure(command, ours_env) if kind == "pt" else None  # the model's first use: transformers builds its tokenizer
    if cold is not None:
        shutil.rmtree(ours_cache / "store")  # a fresh store again; the tokenizer transformers built is kept
    ours = measure(command, ours_env)
    hit = measure(command, ours_env)
    assert "from the prepared store" in hit["output"], hit["output"]
    ours_disk = folder_bytes(ours_cache / "store")
    baseline = None
    if baseline_too:
        baseline = measure([sys.executable, "-c", BASELINE, kind, str(data), str(model), str(base_cache),
                            str(workers), str(CUTOFF)], env)
    limits = {}
    if kind == "pt":  # the tokenizer alone, in the same run: with its thread pool, as the library is used
        limit_env = {**env, "TOKENIZERS_PARALLELISM": "true"}
        for method in ("encode_batch", "encode_batch_fast"):
            out = subprocess.run([sys.executable, "-c", LIMIT, str(data), str(model), method], env=limit_env,
                                 check=True, capture_output=True, text=True).stdout
            limits[method] = json.loads(out.splitlines()[-1])
    summary = [line.strip() for line in ours["output"].splitlines() if "records ->" in line][0]
    result = {"name": name, "data_mb": data.stat().st_size / 1e6, "ours": ours, "hit": hit, "baseline": baseline,
              "ours_disk": ours_disk, "baseline_disk": folder_bytes(base_cache) if baseline else 0,
              "summary": summary, "limits": limits, "cold": cold}
    shutil.rmtree(base_cache, ignore_errors=True)
    return result


def row(name: str, r: dict, load_before: float, load_after: float) -> str:
    o, b, h = r["ours"], r["baseline"], r["hit"]
    label = f"pre-training {r['data_mb']:.0f} MB" if name.startswith("pt") else f"SFT {SIZES[name]:,} records"
    gb = lambda m: (f"{m['seconds']:.1f} s ({m['cpu']:.0f} CPU-s), {m['pss'] / 1e9:.2f} GB "  # noqa: E731
                    f"({m['rss'] / 1e9:.2f} GB)")
    base, wall, pss = "-", "-", "-"
    if b is not None:
        base, pss = gb(b), f"{o['pss'] / b['pss']:.2f}"
        wall = f"{o['seconds'] / b['seconds']:.2f} ({o['cpu'] / b['cpu']:.2f})"
    return (f"| {label} | {gb(o)} | {base} | {wall} | {pss} | {r['ours_disk'] / 1e6:.0f} MB / "
            f"{r['baseline_disk'] / 1e6:.0f} MB | {h['seconds']:.1f} s, {h['pss'] / 1e9:.2f} GB | "
            f"{load_before:.2f} -> {load_after:.2f} |")


def limit_lines(r: dict) -> list[str]:
    """The tokenizer-alone rows, and ours over them (higher is better; 1.0 is the tokenizer's own speed):
    ours on a fresh store with the model's tokenizer kept from an earlier preparation, and ours on the
    model's first use (transformers imported to build the tokenizer)."""
    lines = []
    for method, limit in r["limits"].items():
        lines.append(f"  limit ({method}): {limit['tokens']:,} tokens in {limit['seconds']:.1f} s "
                     f"({limit['tokens'] / limit['seconds'] / 1e6:.2f} M tokens/s), {limit['cpu']:.1f} CPU-s "
                     f"({limit['tokens'] / limit['cpu'] / 1e6:.2f} M tokens per CPU-s)")
        for label, ours in (("ours", r["ours"]), ("ours, model's first use", r["cold"])):
            lines.append(f"    {label} / limit ({method}): {limit['seconds'] / ours['seconds']:.2f} in tokens/s, "
                         f"{limit['cpu'] / ours['cpu']:.2f} in tokens per CPU-s ({ours['seconds']:.1f} s, "
                         f"{ours['cpu']:.1f} CPU-s, the whole command)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SHARED if SHARED.is_dir() else ROOT / "qwen_recipes" / "data")
    parser.add_argument("--sizes", default="pt25,pt100,pt400,sft20k,sft100k,sft300k",
                        help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--keep", type=Path, help="generate and prepare in this folder and keep it")
    parser.add_argument("--no-baseline", action="store_true", help="ours only (e.g. pt2000)")
    args = parser.parse_args()
    names = [n.strip() for n in args.sizes.split(",") if n.strip()]
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        raise SystemExit(f"--sizes: unknown {', '.join(unknown)}; choose from {', '.join(SIZES)}")
    from qwen_recipes.tiny import tiny_qwen2_path

    model = tiny_qwen2_path()
    work = args.keep or Path(tempfile.mkdtemp(prefix="data_scale-"))
    work.mkdir(parents=True, exist_ok=True)
    results = ROOT / "bench" / "results" / f"data_scale_{'_'.join(names)}_{time.strftime('%Y%m%d-%H%M%S')}.txt"
    results.parent.mkdir(exist_ok=True)
    report = open(results, "w")

    def print(*parts, flush=False):  # noqa: A001 - each line to the terminal and to bench/results/
        line = " ".join(map(str, parts))
        sys.stdout.write(line + "\n")
        report.write(line + "\n")
        report.flush()

    print(f"$ python bench/{Path(__file__).name} {' '.join(sys.argv[1:])}")
    print(f"source {args.source}, {args.workers} workers, cutoff {CUTOFF}, in {work}; {load()}")
    print("| data | ours: wall (CPU), peak PSS (RSS sum) | baseline: wall (CPU), peak PSS (RSS sum) | wall (CPU) ours/base | "
          "PSS ours/base | disk ours / base | store ready: wall, peak PSS | load avg 1 min before -> after |")
    print("|---|---|---|---|---|---|---|---|")
    try:
        for name in names:
            before = os.getloadavg()[0]
            r = run_size(name, work, model, args.source, args.workers, not args.no_baseline)
            print(row(name, r, before, os.getloadavg()[0]), flush=True)
            print(f"  ours: {r['summary']}", flush=True)
            for line in limit_lines(r):
                print(line, flush=True)
        print(load())
        print(f"written to {results.relative_to(ROOT)}")
    finally:
        report.close()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
