"""With the token store ready, how long `recipes run` takes to its first training step, and how much
memory the data costs the training process, whatever the corpus size (issue 14).

    python bench/first_step.py [--keep DIR] [--sizes tiny,pt100,pt400,sft300k] [--runs 2]

For each size: the corpus (``tiny``: the bundled domain_corpus.jsonl; the others as
``bench/data_scale.py`` generates them, in ``--keep``, reused if there) is prepared first with
`recipes prepare` (not timed; a store data_scale.py left in ``--keep`` is reused), then
`recipes run` runs a one-stage recipe on the tiny bundled model over it, ``--runs`` times. The
process is started through a small launcher that wraps ``StageRun``'s steps to note the time and
the process's memory (``/proc/self/status`` and ``smaps_rollup``) at each, and ends the process at
the end of the first optimizer step (its result is what is measured; publishing is not). It prints,
per size (medians of the runs):

- start -> first step: from the process's start to the first ``on_step_begin``, and its parts:
  imports and planning (of it: hashing files, the data files' and the model's contents for the
  fingerprint and the store key, once per process), loading the tokenizer, opening the store
  (``recipes.data.prepare.prepare``: key, store and layout), the model (load + LoRA), the trainer,
  and from there to the first step; "over the baseline" is the median, over the runs, of the total
  less that of the baseline run just before it (below),
  and "data's part" the store opened plus the files hashed (the model's files included: the tiny
  row's figure);
- the baseline, measured in the same run: a script of transformers + peft alone reaching the same
  first step on the same model (tokenizer, model, LoRA, Trainer) over blocks held in memory, i.e.
  the model load and the training stack with no data to open; the target is ours at most 2 s over it;
- memory: RSS (anonymous / file-backed) and PSS right after the data is opened and at the end of
  the first step, and the data's own share: RSS after ``prepare()`` minus RSS before it, and RSS at
  the first step minus the ``tiny`` size's (the same process with a corpus of 80 documents).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import data_scale  # noqa: E402  (the generators and the recipe of the preparation bench)

LAUNCHER = r'''
import json, os, sys, time
marks = {"launcher": time.time()}
memory = {}

def mem():
    out = {}
    for line in open("/proc/self/status"):
        key = line.split(":")[0]
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(line.split()[1]) * 1024
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("Pss:"):
            out["Pss"] = int(line.split()[1]) * 1024
    return out

def note(name):
    marks[name] = time.time()
    memory[name] = mem()

result_path, argv = sys.argv[1], sys.argv[2:]
import recipes.data.prepare as prepare_module
from recipes.training import stage as stage_module
StageRun = stage_module.StageRun
original_prepare = prepare_module.prepare

def prepare(*args, **kwargs):
    note("data_open_start")
    try:
        return original_prepare(*args, **kwargs)
    finally:
        note("data_open_end")

prepare_module.prepare = prepare
import recipes.hashing as hashing_module
original_sha256 = hashing_module._sha256
marks["hashing"] = 0.0

def sha256(*args):
    started = time.time()
    try:
        return original_sha256(*args)
    finally:
        marks["hashing"] += time.time() - started

hashing_module._sha256 = sha256

def wrap(name):
    method = getattr(StageRun, name)
    def wrapped(self, *args, **kwargs):
        note(name + "_start")
        value = method(self, *args, **kwargs)
        note(name + "_end")
        if name == "build_trainer":
            self.trainer.add_callback(FirstStep())
        return value
    setattr(StageRun, name, wrapped)

from transformers import TrainerCallback

class FirstStep(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        note("train_begin")
    def on_step_begin(self, args, state, control, **kwargs):
        if "step_begin" not in marks:
            note("step_begin")
    def on_step_end(self, args, state, control, **kwargs):
        note("step_end")
        with open(result_path, "w") as out:
            json.dump({"marks": marks, "memory": memory}, out)
        sys.stdout.flush()
        os._exit(0)

for name in ("prepare_data", "load_model", "attach_adapters", "build_trainer"):
    wrap(name)
from recipes.cli import main
sys.argv = ["recipes", *argv]
main()
'''

# The baseline: what a user writes with transformers + peft alone, reaching the same first step (the
# same model, tokenizer, LoRA, batch, optimizer and precision) over blocks already tokenized in
# memory: no data to open at all. Ours minus this is everything recipes adds, the data's part with it.
BASELINE = r'''
import json, os, sys, time
marks = {}
result_path, model_path, cutoff = sys.argv[1], sys.argv[2], int(sys.argv[3])
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments
from peft import LoraConfig, get_peft_model
marks["imports"] = time.time()
tokenizer = AutoTokenizer.from_pretrained(model_path)
marks["tokenizer"] = time.time()
model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
marks["model"] = time.time()
ids = torch.randint(0, 1000, (cutoff,))
rows = [{"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)} for _ in range(4)]

class FirstStep(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        marks["step_begin"] = time.time()
        with open(result_path, "w") as out:
            json.dump(marks, out)
        os._exit(0)

args = TrainingArguments(output_dir=os.environ["BASELINE_OUT"], per_device_train_batch_size=1, max_steps=2,
                         learning_rate=1e-4, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                         disable_tqdm=True, gradient_checkpointing=True,
                         gradient_checkpointing_kwargs={"use_reentrant": False})
trainer = Trainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                  callbacks=[FirstStep()])
marks["trainer"] = time.time()
trainer.train()
'''

RUN_RECIPE = """[model]
path = "{model}"
[[stages]]
name = "s"
kind = "{kind}"
cutoff_len = {cutoff}
packing = {packing}
max_steps = 2
per_device_train_batch_size = 1
logging_steps = 1
save_steps = 1000
[[stages.data]]
path = "{data}"
format = "{format}"
"""


def corpus(name: str, work: Path, source: Path) -> Path:
    if name == "tiny":
        return ROOT / "qwen_recipes" / "data" / "domain_corpus.jsonl"
    data = work / f"{name}.jsonl"
    if not data.is_file():
        if name.startswith("pt"):
            data_scale.generate_pretrain(data, data_scale.SIZES[name], data_scale.source_documents(source))
        else:
            data_scale.generate_sft(data, data_scale.SIZES[name], data_scale.source_instructions(source))
    return data


def one_run(recipe: Path, env: dict, work: Path) -> dict:
    result = work / "first_step.json"
    result.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="first_step-run-") as run_dir:
        started = time.time()
        done = subprocess.run([sys.executable, "-c", LAUNCHER, str(result), "run", str(recipe), "-o", run_dir],
                              env=env, capture_output=True, text=True)
        if done.returncode != 0 or not result.is_file():
            raise SystemExit(f"recipes run failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        if "from the prepared store" not in done.stdout:
            raise SystemExit(f"the store was not ready:\n{done.stdout[-2000:]}")
    measured = json.loads(result.read_text())
    m, mem = measured["marks"], measured["memory"]
    return {
        "total": m["step_begin"] - started,
        "step_end": m["step_end"] - started,
        "imports": m["prepare_data_start"] - started,
        "hashing": m["hashing"],
        "tokenizer": m["data_open_start"] - m["prepare_data_start"],
        "store": m["data_open_end"] - m["data_open_start"],
        "model": m["load_model_end"] - m["load_model_start"] + m["attach_adapters_end"] - m["attach_adapters_start"],
        "trainer": m["build_trainer_end"] - m["build_trainer_start"],
        "to_step": m["step_begin"] - m["build_trainer_end"],
        "data_rss": mem["data_open_end"]["VmRSS"] - mem["data_open_start"]["VmRSS"],
        "data_file_rss": mem["data_open_end"]["RssFile"] - mem["data_open_start"]["RssFile"],
        "rss_step": mem["step_end"]["VmRSS"], "anon_step": mem["step_end"]["RssAnon"],
        "file_step": mem["step_end"]["RssFile"], "pss_step": mem["step_end"]["Pss"],
        "rss_data_open": mem["data_open_end"]["VmRSS"],
    }


def baseline_run(model: Path, env: dict, work: Path) -> dict:
    result = work / "baseline_step.json"
    result.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="first_step-baseline-") as out:
        started = time.time()
        done = subprocess.run([sys.executable, "-c", BASELINE, str(result), str(model), str(data_scale.CUTOFF)],
                              env={**env, "BASELINE_OUT": out}, capture_output=True, text=True)
        if done.returncode != 0 or not result.is_file():
            raise SystemExit(f"the baseline failed ({done.returncode}):\n{done.stderr[-2000:]}")
    m = json.loads(result.read_text())
    return {"total": m["step_begin"] - started, "imports": m["imports"] - started,
            "tokenizer": m["tokenizer"] - m["imports"], "model": m["model"] - m["tokenizer"],
            "trainer": m["trainer"] - m["model"], "to_step": m["step_begin"] - m["trainer"]}


def measure_size(name: str, work: Path, source: Path, model: Path, runs: int) -> dict:
    kind = "pt" if name in ("tiny",) or name.startswith("pt") else "sft"
    data = corpus(name, work, source)
    cache = work / ("tiny-ours" if name == "tiny" else f"{name}-ours")
    recipe = work / f"{name}-run.toml"
    recipe.write_text(RUN_RECIPE.format(model=model, kind="pretrain" if kind == "pt" else "sft",
                                        cutoff=data_scale.CUTOFF, packing="false" if kind == "pt" else "true",
                                        data=data, format="text" if kind == "pt" else "alpaca"))
    env = {**os.environ, "RECIPES_CACHE": str(cache), "TOKENIZERS_PARALLELISM": "false",
           "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "recipes", "prepare", str(recipe)], env=env, check=True,
                   capture_output=True)  # untimed: a no-op when data_scale.py left the store here
    results = []
    for _ in range(runs):  # each run paired with a baseline run just before it: the machine's drift cancels
        baseline = baseline_run(model, env, work)
        ours = one_run(recipe, env, work)
        ours["over"], ours["baseline"] = ours["total"] - baseline["total"], baseline
        results.append(ours)
    median = {key: statistics.median(r[key] for r in results) for key in results[0] if key != "baseline"}
    median["baselines"] = [r["baseline"] for r in results]
    median["store_mb"] = data_scale.folder_bytes(cache / "store") / 1e6
    median["corpus_mb"] = data.stat().st_size / 1e6
    return median


def row(name: str, r: dict, base_rss: int) -> str:
    mb = lambda b: f"{b / 1e6:.0f} MB"  # noqa: E731
    seconds = " | ".join(f"{r[k]:.2f} s" for k in ("total", "imports", "hashing", "tokenizer", "store", "model",
                                                     "trainer", "to_step"))
    return (f"| {name}: {r['corpus_mb']:.2f} MB ({r['store_mb']:.2f} MB) | {seconds} | "
            f"**{r['over']:+.2f} s** | {r['store'] + r['hashing']:.2f} s | "
            f"{mb(r['data_rss'])} ({mb(r['data_file_rss'])}) | "
            f"{mb(r['rss_step'])} ({mb(r['anon_step'])} / {mb(r['file_step'])}), {mb(r['pss_step'])} | "
            f"{(r['rss_step'] - base_rss) / 1e6:+.0f} MB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=Path(tempfile.gettempdir()) / "first_step",
                        help="where the corpora and stores are (bench/data_scale.py --keep DIR leaves them)")
    parser.add_argument("--source", type=Path, default=data_scale.SHARED if data_scale.SHARED.is_dir()
                        else ROOT / "qwen_recipes" / "data")
    parser.add_argument("--sizes", default="tiny,pt100,pt400,sft300k")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from qwen_recipes.tiny import tiny_qwen2_path

    model = tiny_qwen2_path()
    args.keep.mkdir(parents=True, exist_ok=True)
    names = [n.strip() for n in args.sizes.split(",") if n.strip()]
    print(f"`recipes run`, store ready, tiny Qwen2 model, batch 1 x {data_scale.CUTOFF}; medians of {args.runs}; "
          f"{data_scale.load()}")
    print("| corpus (store) | start -> first step | imports + plan | of it: hashing files | tokenizer | "
          "store opened | model load + LoRA | trainer | -> step | over the baseline | data's part: store + hashing | "
          "RSS data opened: delta (file-backed) | at first step: RSS (anon / file), PSS | RSS at first step - tiny's |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    base, baselines = None, []
    for name in names:
        r = measure_size(name, args.keep, args.source, model, args.runs)
        base = r["rss_step"] if base is None else base
        baselines += r["baselines"]
        print(row(name, r, base), flush=True)
    baseline = {key: statistics.median(b[key] for b in baselines) for key in baselines[0]}
    print(f"baseline (transformers + peft alone, the same first step over blocks in memory; run before each of "
          f"ours, median of {len(baselines)}): {baseline['total']:.2f} s to the first step: imports "
          f"{baseline['imports']:.2f} s, tokenizer {baseline['tokenizer']:.2f} s, model + LoRA {baseline['model']:.2f} s, "
          f"Trainer {baseline['trainer']:.2f} s, -> step {baseline['to_step']:.2f} s")
    print(data_scale.load())


if __name__ == "__main__":
    main()
