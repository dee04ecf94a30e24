"""The GPU check: one command that proves or disproves each GPU target, on one GPU, with no download.

    python bench/gpu_check.py                    # on a GPU: the targets, at Qwen2.5-7B shape
    python bench/gpu_check.py --dry-run          # on CPU: every row's code path at toy size (tests/test_gpu_check.py)
    python bench/gpu_check.py --json FILE        # also a JSON copy of the table (default: $OUT/gpu_check.json when $OUT is set)

docs/gpus.md says how to carry what the machine lacks (bench/gpu_bundle.sh) and how to read the table.

Everything goes through the project's own stage path: a recipe file, ``make_plan``, ``StageRun`` (the
real loaders, our Trainer, the chunked loss, the bitsandbytes backend for QLoRA). The model is a
Qwen2.5-7B-shaped model with random weights (qwen_recipes/configs/Qwen2.5-7B.json), built on the GPU
and saved to a scratch folder, so that the stages load it the way they load a real one. The data are
the bundled samples, repeated to fill the steps.

Rows, each with its target as a hard threshold (the plan's estimate is printed beside, as information):

- LoRA and QLoRA (nf4, double quant) pre-training at 2048 tokens, batch 1: the stage's peak
  ``torch.cuda.max_memory_allocated`` at most 20 GB and 9 GB (10^9 bytes); reserved printed too.
- Tokens/s of our SFT stage (packing, chunked loss) over a plain HF Trainer + PEFT baseline on the
  same conversations, the same model, LoRA and batch, padded, with the standard loss: at least 1.1x.
- Packed = unpacked: the loss and the LoRA gradients of one batch, packed the way the stage packs it
  and padded, under sdpa and, where flash-attn imports, flash_attention_2 (a 2-layer model of the 7B's
  widths).
- A two-stage ``recipes run`` (LoRA, then LoRA on the merged result: quantization is per plan, not per
  stage) end to end on a 2-layer model of the 7B's widths: both merged models published, and stage
  2's reported peak no more than 10% above stage 1's (stage 1's model and optimizer would add more).

A header (GPU, capability, library versions, real bf16 support), PASS / FAIL / SKIP per row and a
one-line verdict: "proven" only when every target row passed; a SKIP is never a proof. Exit code 1
when a row failed. With ``--dry-run`` every row runs at toy size on CPU: nothing is measured, the
threshold rows say SKIP, and the run passes when no row failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GB = 1e9
MEMORY_LIMIT_GB = {"lora": 20.0, "qlora": 9.0}  # 7B, 2048 tokens, batch 1: the stage's peak allocated
SPEED_RATIO = 1.1  # our SFT stage's tokens/s over the plain HF Trainer + PEFT baseline
STAGE2_SLACK = 1.10  # stage 2's peak over stage 1's (the same stage twice): its own, not both
TOY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
TARGETS = ("lora peak memory", "qlora peak memory", "tokens/s ours / HF+PEFT", "packed = unpacked (sdpa)",
           "packed = unpacked (flash_attention_2)", "2-stage recipes run", "stage 2 peak excludes stage 1")


class Table:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, check: str, result: str, threshold: str = "", status: str = "PASS", info: str = "") -> None:
        self.rows.append({"check": check, "result": result, "threshold": threshold, "status": status, "info": info})
        print(f"        {status} {check}: {result}", file=sys.stderr, flush=True)  # as it comes, before the table

    def verdict(self, dry: bool) -> str:
        failed = [r["check"] for r in self.rows if r["status"] == "FAIL"]
        skipped = [r["check"] for r in self.rows if r["status"] == "SKIP"]
        missing = [t for t in TARGETS if not any(r["check"] == t for r in self.rows)]
        if dry:
            return ("dry run: NOT PROVEN, nothing measured (toy size on CPU); "
                    + (f"FAILED: {', '.join(failed)}" if failed else "every row's code path ran"))
        if not failed and not skipped and not missing:
            return f"PROVEN: all {len(self.rows)} rows passed"
        parts = ([f"failed: {', '.join(failed)}"] if failed else []) + (
            [f"skipped (a skip is no proof): {', '.join(skipped)}"] if skipped else []) + (
            [f"not reached: {', '.join(missing)}"] if missing else [])
        return "NOT PROVEN: " + "; ".join(parts)

    def lines(self) -> list[str]:
        keys = ("check", "result", "threshold", "status", "info")
        widths = [max(len(str(r[k])) for r in [dict(zip(keys, keys)), *self.rows]) for k in keys]
        out = ["| " + " | ".join(k.ljust(w) for k, w in zip(keys, widths)) + " |",
               "| " + " | ".join("-" * w for w in widths) + " |"]
        out += ["| " + " | ".join(str(r[k]).ljust(w) for k, w in zip(keys, widths)) + " |" for r in self.rows]
        return out


class Env:
    """Where and at what size the check runs."""

    def __init__(self, dry: bool, work: Path):
        import torch

        self.dry, self.work = dry, work
        self.device = "cpu" if dry else "cuda"
        if not dry and not torch.cuda.is_available():
            raise SystemExit("no GPU here: run with --dry-run (toy size on CPU)")
        self.precision = "fp32" if dry else "bf16"
        self.dtype = torch.float32 if dry else torch.bfloat16
        self.seq = 64 if dry else 2048
        self.steps = 2 if dry else 6  # optimizer steps per stage; tokens/s from step 2 on
        config = json.loads((ROOT / "qwen_recipes/configs/Qwen2.5-7B.json").read_text())
        if dry:
            config.update(TOY)
        self.config = config

    def sync(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()


def header(env: Env) -> dict:
    import importlib.metadata as md

    import torch

    def version(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "not installed"

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            **{name: version(name) for name in ("transformers", "peft", "accelerate", "bitsandbytes", "flash-attn")}}
    if env.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                    memory_gb=round(props.total_memory / GB, 1),
                    bf16_native=torch.cuda.is_bf16_supported(including_emulation=False))
    else:
        info.update(gpu="none (dry run on CPU, toy size, fp32)", capability="-", memory_gb=None, bf16_native=None)
    return info


# --- the models -------------------------------------------------------------------------------------

def model_folder(env: Env, name: str, layers: int | None = None) -> Path:
    """A Qwen2.5-7B-shaped model (``layers``: fewer decoder layers, same widths) with random weights,
    built on the device and saved with the genuine Qwen tokenizer, as a stage would find a real one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    from qwen_recipes.tiny import tiny_qwen2_path

    folder = env.work / name
    if (folder / "config.json").is_file():
        return folder
    values = {k: v for k, v in env.config.items() if k not in ("architectures", "torch_dtype", "dtype")}
    if layers is not None:
        values["num_hidden_layers"] = layers
    config = Qwen2Config(**values)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=env.dtype)
    model.to_empty(device=env.device)
    generator = torch.Generator(device=env.device).manual_seed(0)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=generator)
    model.save_pretrained(folder, max_shard_size="5GB")
    AutoTokenizer.from_pretrained(tiny_qwen2_path()).save_pretrained(folder)
    del model
    if env.device == "cuda":
        torch.cuda.empty_cache()
    return folder


# --- the data --------------------------------------------------------------------------------------

def data_files(env: Env) -> dict:
    """The bundled pre-training text and conversations, repeated to fill every stage's steps."""
    bundled = ROOT / "qwen_recipes" / "data"
    text = [json.loads(line) for line in (bundled / "domain_corpus.jsonl").read_text().splitlines() if line.strip()]
    chats = [json.loads(line) for line in (bundled / "instructions.jsonl").read_text().splitlines() if line.strip()]
    copies = 2 if env.dry else 12
    out = {"text": env.work / "text.jsonl", "chats": env.work / "chats.jsonl"}
    # each copy numbered, so that no two documents are the same text
    out["text"].write_text("".join(json.dumps({"text": f"[{i}] {r['text']}"}, ensure_ascii=False) + "\n"
                                   for i in range(copies) for r in text))
    out["chats"].write_text("".join(json.dumps(_numbered(r, i), ensure_ascii=False) + "\n"
                                    for i in range(copies) for r in chats))
    return out


def _numbered(record: dict, i: int) -> dict:
    messages = [dict(m) for m in record["messages"]]
    messages[0]["content"] = f"[{i}] {messages[0]['content']}"
    return {"messages": messages}


def recipe_text(env: Env, folder: Path, files: dict, stages: list[dict], quantized: bool = False) -> str:
    lines = [f'name = "gpu_check"\n[model]\npath = "{folder}"\n']
    if quantized:
        lines.append('[quantization]\nbackend = "bitsandbytes"\nbits = 4\nquant_type = "nf4"\ndouble_quant = true\n')
    lines.append(f'[defaults]\nprecision = "{env.precision}"\nlora_rank = 16\nlora_alpha = 16\nlora_target = "all"\n'
                 f'max_steps = {env.steps}\nlogging_steps = 1\nsave_steps = {env.steps}\nlearning_rate = 1e-4\n'
                 f'cutoff_len = {env.seq}\ngradient_checkpointing = true\ngradient_accumulation_steps = 1\n'
                 'attn_implementation = "sdpa"\noptim = "adamw_torch"\n')
    for stage in stages:
        kind = stage["kind"]
        data = files["text"] if kind == "pretrain" else files["chats"]
        lines.append(f'[[stages]]\nname = "{stage["name"]}"\nkind = "{kind}"\n'
                     + (f'base = "{stage["base"]}"\n' if "base" in stage else "")
                     + f'per_device_train_batch_size = {stage.get("batch", 1)}\n'
                     + f'[[stages.data]]\npath = "{data}"\nformat = "{"text" if kind == "pretrain" else "messages"}"\n')
    return "\n".join(lines)


# --- timing, shared by our stage and the baseline ---------------------------------------------------

def timer_callback(env: Env, sink: list):
    """Records (time, input tokens seen) at each optimizer step's end, after a device sync."""
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            env.sync()
            sink.append((time.perf_counter(), int(state.num_input_tokens_seen or 0)))

    return Timer()


def tokens_per_second(marks: list) -> float:
    """From the first step's end to the last's: the first step (allocations, kernel choice) is warm-up."""
    if len(marks) < 2:
        raise RuntimeError(f"{len(marks)} step(s) timed; at least 2 are needed")
    (t0, n0), (t1, n1) = marks[0], marks[-1]
    return (n1 - n0) / (t1 - t0)


# --- our stage path --------------------------------------------------------------------------------

def run_stage(env: Env, text: str, name: str, marks: list | None = None):
    """The recipe's first stage through StageRun (no publishing): (StageResult, reserved bytes, plan
    estimate of the stage's peak in bytes)."""
    from rich.console import Console

    from recipes.planning.estimate import recipe_estimate
    from recipes.plugins.hookspecs import CallbackPlugin, hookimpl
    from recipes.config.load import load_recipe
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry
    from recipes.run.manifest import Manifest
    from recipes.run.progress import ManifestProgress
    from recipes.training.memory_peak import release_memory
    from recipes.training.stage import StageRun

    class Timing:
        @hookimpl
        def register_callbacks(self):
            return [CallbackPlugin("gpu_check_timer", lambda context: timer_callback(env, marks), default=True)]

    registry = get_registry(extra_plugins=(Timing(),) if marks is not None else ())
    path = env.work / f"{name}.toml"
    path.write_text(text)
    loaded = load_recipe(str(path), registry)
    run_dir = env.work / f"run-{name}"
    plan = make_plan(loaded, registry, str(run_dir))
    estimate = recipe_estimate(loaded, plan, env.device)["stages"][0]["memory"]["peak"]
    stage = plan.stages[0]
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.load(run_dir)
    manifest.reset(stage.name, status="running")
    log = open(env.work / f"{name}.log", "w")
    console = Console(file=log, width=160)
    say = lambda message: console.print(f"  {message}", highlight=False)  # noqa: E731
    stage_run = StageRun(plan, stage, str(plan.model_path), say, console, ManifestProgress(manifest, stage.name, run_dir))
    try:
        result = stage_run.run()
    finally:
        stage_run.close()
        del stage_run
        release_memory(env.device)
        log.close()
    reserved = 0
    if env.device == "cuda":
        import torch

        reserved = torch.cuda.max_memory_reserved()
    return result, reserved, estimate


def memory_row(env: Env, table: Table, folder: Path, files: dict, quantized: bool) -> None:
    what = "qlora" if quantized else "lora"
    if env.device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()  # reserved too (the stage resets the allocated peak itself)
    text = recipe_text(env, folder, files, [{"name": what, "kind": "pretrain", "batch": 1}], quantized)
    result, reserved, estimate = run_stage(env, text, what)
    limit = MEMORY_LIMIT_GB[what]
    peak = result.peak_memory_bytes
    info = f"plan {estimate / GB:.2f} GB; {result.steps} steps, loss {result.first_loss:.3f} -> {result.final_loss:.3f}"
    if env.dry:
        table.add(f"{what} peak memory", f"ran ({result.steps} steps; CPU: no GPU memory to read)",
                  f"<= {limit:g} GB at 7B, 2048 tokens, batch 1", "SKIP", info)
        return
    table.add(f"{what} peak memory", f"{peak / GB:.2f} GB allocated ({peak / 2 ** 30:.2f} GiB), "
              f"{reserved / GB:.2f} GB reserved", f"<= {limit:g} GB (7B, {env.seq} tokens, batch 1)",
              "PASS" if peak <= limit * GB else "FAIL", info)


# --- the speed comparison ---------------------------------------------------------------------------

def speed_row(env: Env, table: Table, folder: Path, files: dict) -> None:
    batch = 4
    ours: list = []
    text = recipe_text(env, folder, files, [{"name": "sft", "kind": "sft", "batch": batch}])
    result, _, _ = run_stage(env, text, "sft", ours)
    ours_speed = tokens_per_second(ours)
    theirs = baseline(env, folder, files, batch)
    ratio = ours_speed / theirs
    threshold = f">= {SPEED_RATIO:g}x (SFT, batch {batch}, {env.seq} tokens)"
    info = (f"ours {ours_speed:,.0f} tok/s (packing, chunked loss), HF+PEFT {theirs:,.0f} tok/s (padded, "
            f"standard loss)")
    status = "SKIP" if env.dry else "PASS" if ratio >= SPEED_RATIO else "FAIL"
    table.add("tokens/s ours / HF+PEFT", f"{ratio:.2f}x" + (" (toy size on CPU: not a measurement)" if env.dry else ""),
              threshold, status, info)


def baseline(env: Env, folder: Path, files: dict, batch: int) -> float:
    """A plain HF Trainer + PEFT on the same conversations (tokenized by the project, the same
    tokens), the same model, LoRA, optimizer and batch: padded per batch, the model's own loss."""
    import inspect

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer,
                              TrainingArguments)
    from transformers.trainer_callback import PrinterCallback

    from recipes.data.tokenization import DataStats, sft_examples

    tokenizer = AutoTokenizer.from_pretrained(folder)
    records = [json.loads(line) for line in files["chats"].read_text().splitlines()]
    examples = [{"input_ids": e["input_ids"], "labels": e["labels"]}
                for e in sft_examples(records, tokenizer, env.seq, DataStats())]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=env.dtype, attn_implementation="sdpa").to(env.device)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    checkpointing = ("activation_checkpointing" if "activation_checkpointing"
                     in inspect.signature(TrainingArguments).parameters else "gradient_checkpointing")
    args = TrainingArguments(
        output_dir=str(env.work / "baseline"), per_device_train_batch_size=batch, max_steps=env.steps,
        learning_rate=1e-4, optim="adamw_torch", bf16=env.precision == "bf16", use_cpu=env.dry,
        **{checkpointing: True, f"{checkpointing}_kwargs": {"use_reentrant": False}},
        logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding")
    marks: list = []
    trainer = Trainer(model=model, args=args, train_dataset=examples,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
                      callbacks=[timer_callback(env, marks)])
    trainer.remove_callback(PrinterCallback)  # its log lines would go between the table's progress lines
    trainer.train()
    del trainer, model
    from recipes.training.memory_peak import release_memory

    release_memory(env.device)
    if env.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    return tokens_per_second(marks)


# --- packed = unpacked ------------------------------------------------------------------------------

def packing_rows(env: Env, table: Table, folder: Path) -> None:
    from transformers.utils import is_flash_attn_2_available

    for kernel in ("sdpa", "flash_attention_2"):
        check = f"packed = unpacked ({kernel})"
        if kernel == "flash_attention_2" and (env.dry or not is_flash_attn_2_available()):
            table.add(check, "not run: " + ("no GPU" if env.dry else "flash-attn does not import here"),
                      "loss and LoRA grads", "SKIP")
            continue
        packed_equals_padded(env, table, folder, kernel, check)


def packed_equals_padded(env: Env, table: Table, folder: Path, kernel: str, check: str) -> None:
    """One batch of conversations of different lengths, padded (one sequence per row) and packed the way
    the stage packs it: the chunked loss and every LoRA gradient."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from recipes.data.collate import packed_collator
    from recipes.data.packing import pack_examples
    from recipes.data.tokenization import PadCollator
    from recipes.training.chunked_loss import chunk_precision, chunked_lm_loss

    g = torch.Generator().manual_seed(1)
    lengths = (37, 12, 60, 5, 23) if env.dry else (900, 300, 1500, 64, 700)
    examples = []
    for n in lengths:
        ids = torch.randint(0, 30000, (n,), generator=g).tolist()
        examples.append({"input_ids": ids, "labels": [-100] * (n // 3) + ids[n // 3:]})
    rows, _ = pack_examples(examples, 2 * max(lengths))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=env.dtype, attn_implementation=kernel).to(env.device)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM", init_lora_weights=False))  # non-zero B: real grads
    move = lambda b: {k: v.to(env.device) if torch.is_tensor(v) else v for k, v in b.items()}  # noqa: E731
    results = []
    for batch in (PadCollator(0)(examples), packed_collator(model, 0)(rows)):
        model.zero_grad(set_to_none=True)
        autocast = torch.autocast(env.device, dtype=env.dtype) if env.precision != "fp32" else contextlib.nullcontext()
        with autocast, chunk_precision(env.device, env.dtype if env.precision != "fp32" else None):
            loss = chunked_lm_loss(model, move(batch), chunk_size=1024)
        loss.backward()
        grads = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None])
        results.append((loss.item(), grads))
    (padded, ga), (packed, gb) = results
    cosine = torch.nn.functional.cosine_similarity(ga, gb, dim=0).item()
    norm = ((ga - gb).norm() / ga.norm()).item()
    loss_tol, cos_min, norm_tol = (1e-5, 0.99999, 1e-4) if env.dry else (1e-2, 0.99, 5e-2)
    rel = abs(packed - padded) / abs(padded)
    ok = rel <= loss_tol and cosine >= cos_min and norm <= norm_tol
    table.add(check, f"loss {packed:.5f} vs {padded:.5f} (rel {rel:.1e}); grads cosine {cosine:.5f}, rel {norm:.1e}",
              f"loss rel <= {loss_tol:g}, cosine >= {cos_min:g}, grad rel <= {norm_tol:g}", "PASS" if ok else "FAIL",
              f"{type(model.get_base_model()).__name__} {model.config.num_hidden_layers} layers, "
              f"{model.config._attn_implementation}, {sum(lengths)} tokens")
    del model


# --- recipes run, two stages ------------------------------------------------------------------------

def two_stage_run(env: Env, table: Table, folder: Path, files: dict) -> None:
    text = recipe_text(env, folder, files, [{"name": "one", "kind": "pretrain"},
                                            {"name": "two", "kind": "pretrain", "base": "one"}])
    recipe, run_dir = env.work / "two_stages.toml", env.work / "run-two-stages"
    recipe.write_text(text)
    started = time.perf_counter()
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "recipes", "run", str(recipe), "-o", str(run_dir)],
                          capture_output=True, text=True, timeout=420, cwd=env.work, env=environment)
    (env.work / "two_stages.log").write_text(done.stdout + done.stderr)
    merged = sorted(p.parent.parent.name for p in (run_dir / "stages").glob("*/merged/config.json"))
    ok = done.returncode == 0 and merged == ["one", "two"]
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
    table.add("2-stage recipes run", f"exit {done.returncode}, merged models of {merged}, "
              f"{time.perf_counter() - started:.0f} s" + ("" if ok else f": {tail[0][:100]}"),
              "exit 0, both stages published", "PASS" if ok else "FAIL",
              f"2 layers of the 7B's widths, {env.steps} steps each")
    if not ok:
        table.add("stage 2 peak excludes stage 1", "no result: the run failed", f"<= {STAGE2_SLACK:g}x stage 1's",
                  "FAIL")
        return
    peaks = [json.loads((run_dir / "stages" / name / "stage.json").read_text())["peak_memory_bytes"]
             for name in ("one", "two")]
    result = f"stage 1 {peaks[0] / GB:.2f} GB, stage 2 {peaks[1] / GB:.2f} GB ({peaks[1] / peaks[0]:.2f}x)"
    if env.dry:
        table.add("stage 2 peak excludes stage 1", result + " (CPU: resident memory, not a GPU peak)",
                  f"<= {STAGE2_SLACK:g}x stage 1's", "SKIP")
        return
    table.add("stage 2 peak excludes stage 1", result, f"<= {STAGE2_SLACK:g}x stage 1's (the same stage twice)",
              "PASS" if peaks[1] <= STAGE2_SLACK * peaks[0] else "FAIL")


# --- main ---------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every row's code path at toy size on CPU (fp32)")
    parser.add_argument("--json", type=Path, default=None,
                        help="write the table as JSON here (default: $OUT/gpu_check.json when $OUT is set)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    table = Table()
    target = args.json or (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None)
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu_check-")))
        work.mkdir(parents=True, exist_ok=True)
        env = Env(args.dry_run, work)
        info = header(env)
        print("# gpu_check " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)

        def step(label: str, check, *names: str) -> None:
            print(f"[{time.perf_counter() - started:5.0f} s] {label}", file=sys.stderr, flush=True)
            try:
                check()
            except Exception as exc:  # one failed check is its rows failing; the others still run
                message = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
                for name in names:
                    table.add(name, message, "", "FAIL")
            # the rows so far, in case the run is stopped at a time limit before the end
            write_json(target, info, table, started, f"incomplete: stopped after {label!r}", env.dry)

        folders: dict = {}
        files = data_files(env)
        step("building the 7B-shaped model", lambda: folders.update(full=model_folder(env, "qwen7b")),
             "lora peak memory", "qlora peak memory", "tokens/s ours / HF+PEFT")
        if "full" in folders:
            step("LoRA stage", lambda: memory_row(env, table, folders["full"], files, False), "lora peak memory")
            step("QLoRA stage", lambda: memory_row(env, table, folders["full"], files, True), "qlora peak memory")
            step("SFT stage and the HF+PEFT baseline", lambda: speed_row(env, table, folders["full"], files),
                 "tokens/s ours / HF+PEFT")
        step("building the 2-layer model", lambda: folders.update(small=model_folder(env, "qwen7b-2layers", 2)),
             "packed = unpacked (sdpa)", "2-stage recipes run")
        if "small" in folders:
            step("packed = unpacked", lambda: packing_rows(env, table, folders["small"]), "packed = unpacked (sdpa)")
            step("recipes run, two stages", lambda: two_stage_run(env, table, folders["small"], files),
                 "2-stage recipes run")
    verdict = table.verdict(env.dry)
    print(f"# gpu_check on {info['gpu']}{' --dry-run' if env.dry else ''}: {time.perf_counter() - started:.0f} s")
    for line in table.lines():
        print(line)
    print(f"verdict: {verdict}")
    write_json(target, info, table, started, verdict, env.dry)
    return 1 if any(r["status"] == "FAIL" for r in table.rows) else 0


def write_json(target: Path | None, info: dict, table: Table, started: float, verdict: str, dry: bool) -> None:
    if target is None:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"header": info, "seconds": round(time.perf_counter() - started, 1),
                                  "rows": table.rows, "verdict": verdict, "dry_run": dry}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
