"""The GPU check (issue 18): one script, no download, at most ~8 minutes on one GPU.

    python bench/gpu_check.py            # the full check (a Qwen2.5-7B-shaped model)
    python bench/gpu_check.py --quick    # a first look, under 3 minutes (batch 1, fewer steps)
    python bench/gpu_check.py --dry-run  # every code path at toy size on CPU (tests/test_gpu_check.py)

The model is built from qwen_recipes/configs/Qwen2.5-7B.json with random weights: on the meta device,
then materialised on the GPU in bf16 (cards under 40 GB get half the layers, said in the table).
LoRA r=16 alpha 16 on every linear layer but lm_head, 2048 tokens, gradient checkpointing, AdamW.
Rows: peak GPU memory (LoRA bf16 and QLoRA nf4, batch 1 and 4) beside Qwen's published 23.8 GB /
13.9 GB (LoRA / Q-LoRA, 2048 tokens) and beside `recipes plan`'s estimate (memory rows FAIL when the
estimate is more than 35% off); tokens/s with the chunked and the standard loss; chunked = standard
loss (relative 1e-2) and LoRA gradients (cosine >= 0.99, relative norm difference <= 5e-2) in bf16;
an fp16 run that survives GradScaler overflows; packed (flattened) = padded loss for each attention
kernel that runs; a 2-stage tiny plan through `recipes run`; FSDP and DeepSpeed steps at world size 1
through torchrun where they install. One table; exit code 1 when a check fails.
Nothing here has run on a GPU yet (no GPU was lent to the session that wrote it).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PUBLISHED_GB = {"lora": 23.8, "qlora": 13.9}  # Qwen's published figures at 2048 tokens
TOY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
           vocab_size=4096)
ROWS: list[tuple[str, str, str, str]] = []


def row(check: str, result: str, reference: str = "", ok: bool | None = True) -> None:
    ROWS.append((check, result, reference, "PASS" if ok else "SKIP" if ok is None else "FAIL"))


class Env:
    def __init__(self, dry_run: bool, quick: bool):
        import torch

        self.dry, self.quick = dry_run, quick
        self.device = "cpu" if dry_run or not torch.cuda.is_available() else "cuda"
        if self.device == "cpu" and not dry_run:
            raise SystemExit("no GPU here: run with --dry-run (toy size on CPU)")
        self.dtype = torch.float32 if dry_run else torch.bfloat16
        self.seq = 64 if dry_run else 2048
        self.batches = (1,) if quick else (1, 2) if dry_run else (1, 4)
        self.steps = 1 if dry_run else 2 if quick else 4
        config = json.loads((ROOT / "qwen_recipes/configs/Qwen2.5-7B.json").read_text())
        self.note = ""
        if dry_run:
            config.update(TOY)
        elif torch.cuda.get_device_properties(0).total_memory < 40 * 2 ** 30:
            config["num_hidden_layers"] //= 2
            self.note = f" ({config['num_hidden_layers']} layers: card under 40 GB)"
        self.config = config
        self.name = "CPU (dry run, toy size, fp32)" if dry_run else torch.cuda.get_device_name(0)


def build(env: Env, quantized: bool):
    """The 7B-shaped model with random weights, LoRA r16 on all linear layers, ready to train."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(**{k: v for k, v in env.config.items() if k not in ("architectures", "torch_dtype")})
    config.use_cache = False
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=env.dtype, attn_implementation="sdpa")
    model.to_empty(device=env.device)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.ones_like(p) if "norm" in name else torch.randn_like(p) * 0.02)
        for module in model.modules():
            if hasattr(module, "inv_freq"):  # non-persistent buffers are garbage after to_empty
                inv_freq, _ = module.compute_default_rope_parameters(config)
                module.inv_freq = inv_freq.to(env.device)
                module.original_inv_freq = module.inv_freq.clone()
    if quantized:
        model = quantize_nf4(model, env)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    lora = LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def quantize_nf4(model, env: Env):
    """Every decoder linear layer to bitsandbytes nf4 (double quant, bf16 compute), in place, one at a
    time; the rest cast to fp32 as prepare_model_for_kbit_training does (lm_head included)."""
    import bitsandbytes as bnb
    import torch

    for parent in list(model.model.layers.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear:
                new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                        compute_dtype=env.dtype, quant_type="nf4", compress_statistics=True,
                                        device="meta")
                new.weight = bnb.nn.Params4bit(child.weight.data.to("cpu" if env.dry else env.device),
                                               requires_grad=False, quant_type="nf4",
                                               compress_statistics=True).to(env.device)
                if child.bias is not None:
                    new.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, name, new)
    for p in model.parameters():
        if p.dtype in (torch.float16, torch.bfloat16):
            p.data = p.data.float()
        p.requires_grad_(False)
    model.is_loaded_in_4bit = True
    return model


def batch(env: Env, size: int, seq: int | None = None):
    import torch

    seq = seq or env.seq
    g = torch.Generator().manual_seed(size)
    ids = torch.randint(0, min(32000, env.config["vocab_size"]), (size, seq), generator=g)
    labels = ids.clone()
    labels[:, : seq // 4] = -100  # a prompt without labels, as in SFT
    return {"input_ids": ids.to(env.device), "labels": labels.to(env.device)}


def precision(env: Env, dtype=None, scale: float = 1.0):
    """accelerate's autocast around the forward, and the chunk loop's own (StageTrainer's way)."""
    import torch

    from recipes.training.chunked_loss import chunk_precision

    dtype = dtype or (None if env.dry else torch.bfloat16)
    if dtype is None:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast(env.device, dtype=dtype))
    stack.enter_context(chunk_precision(env.device, dtype, scale))
    return stack


def loss_of(model, inputs, kind: str, env: Env, **kw):
    from recipes.training.chunked_loss import chunked_lm_loss

    with precision(env, **kw):
        if kind == "chunked":
            return chunked_lm_loss(model, inputs, chunk_size=512)
        return model(**inputs).loss


def train_steps(model, env: Env, size: int, kind: str, steps: int) -> float:
    """Tokens per second over ``steps`` optimizer steps (after one warm-up step)."""
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    inputs = batch(env, size)
    for step in range(steps + 1):
        if step == 1:
            sync(env)
            started = time.perf_counter()
        loss_of(model, inputs, kind, env).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(env)
    return steps * size * env.seq / (time.perf_counter() - started)


def sync(env: Env) -> None:
    import torch

    if env.device == "cuda":
        torch.cuda.synchronize()


def estimate_gb(env: Env, size: int, quantized: bool) -> float:
    from recipes.config.schema import KIND_DEFAULTS, StageSettings
    from recipes.family import family
    from recipes.planning.memory import estimate_memory

    settings = StageSettings(**{**KIND_DEFAULTS["pretrain"], "per_device_train_batch_size": size,
                                "cutoff_len": env.seq, "precision": "fp32" if env.dry else "bf16",
                                "lora_dropout": 0.0})
    quant = {"backend": "bitsandbytes", "bits": 4, "double_quant": True} if quantized else None
    shape = family().shape_of(env.config)
    return estimate_memory(shape, settings, quant, env.device, lambda tokens: min(tokens, 512)).total / 1e9


def memory_and_speed(env: Env, quantized: bool) -> None:
    import torch

    what = "qlora" if quantized else "lora"
    model = build(env, quantized)
    for size in env.batches:
        if env.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        speed = train_steps(model, env, size, "chunked", env.steps)
        estimate = estimate_gb(env, size, quantized)
        published = f"Qwen {PUBLISHED_GB[what]} GB (2048 tok), " if size == 1 else ""
        if env.device == "cuda":
            peak = torch.cuda.max_memory_allocated() / 1e9
            row(f"{what} b{size} peak memory{env.note}", f"{peak:.1f} GB", f"{published}plan {estimate:.1f} GB",
                abs(peak - estimate) <= 0.35 * estimate)
        else:
            row(f"{what} b{size} peak memory", "n/a on CPU", f"{published}plan {estimate:.3f} GB", None)
        row(f"{what} b{size} tokens/s chunked", f"{speed:,.0f}", "", speed > 0)
        if not (env.quick or (size > 1 and env.device == "cuda" and env.note)):  # standard at b4: +15 GB logits
            standard = train_steps(model, env, size, "standard", env.steps)
            row(f"{what} b{size} tokens/s standard", f"{standard:,.0f}", f"chunked/standard {speed / standard:.2f}x",
                standard > 0)
    if not quantized:
        equality(model, env)
    del model


def equality(model, env: Env) -> None:
    """Chunked and standard loss and LoRA gradients on the same batch (bf16 on GPU, fp32 dry)."""
    import torch

    inputs = batch(env, 1)
    results = []
    for kind in ("chunked", "standard"):
        model.zero_grad(set_to_none=True)
        loss = loss_of(model, inputs, kind, env)
        loss.backward()
        grads = torch.cat([p.grad.float().flatten() for n, p in model.named_parameters() if p.grad is not None])
        results.append((loss.item(), grads))
    (a, ga), (b, gb) = results
    model.zero_grad(set_to_none=True)
    tol = 1e-4 if env.dry else 1e-2
    rel = abs(a - b) / abs(b)
    row("chunked = standard loss", f"{a:.5f} vs {b:.5f} (rel {rel:.1e})", f"rel <= {tol:g}", rel <= tol)
    cosine = torch.nn.functional.cosine_similarity(ga, gb, dim=0).item()
    norm = ((ga - gb).norm() / gb.norm()).item()
    row("chunked = standard LoRA grads", f"cosine {cosine:.5f}, rel norm diff {norm:.1e}",
        "cosine >= 0.99, rel <= 5e-2", cosine >= 0.99 and norm <= 5e-2)


def fp16_overflow(env: Env) -> None:
    """fp16 autocast + a GradScaler starting far too high: overflow steps are skipped (the guard lets
    them pass), the scale comes down, then steps train."""
    import torch

    from recipes.training.trainer import gradient_is_fatal

    small = Env.__new__(Env)
    small.__dict__.update(env.__dict__, seq=min(env.seq, 512))
    model = build(small, quantized=False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-4)
    scaler = torch.amp.GradScaler(env.device, init_scale=2.0 ** (20 if env.dry else 30))
    inputs, skipped, trained, fatal = batch(small, 1), 0, 0, False
    for _ in range(40):
        loss = loss_of(model, inputs, "chunked", small, dtype=torch.float16, scale=scaler.get_scale())
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        finite = all(bool(torch.isfinite(p.grad).all()) for p in params if p.grad is not None)
        fatal |= gradient_is_fatal(finite, scaler)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        skipped, trained = skipped + (not finite), trained + finite
        if trained >= 2:
            break
    row("fp16 survives loss-scale overflow", f"{skipped} overflow steps skipped, {trained} trained, scale "
        f"{scaler.get_scale():g}", "guard never fatal", skipped > 0 and trained >= 2 and not fatal)


def packing(env: Env) -> None:
    """Flattened packed rows = padded batch, for each attention kernel that runs here."""
    import torch
    from transformers import AutoModelForCausalLM

    from qwen_recipes.tiny import tiny_qwen2_path
    from recipes.data.collate import FlatteningCollator
    from recipes.data.packing import pack_examples
    from recipes.data.tokenization import PadCollator

    g = torch.Generator().manual_seed(1)
    examples = []
    for n in (37, 12, 60, 5, 23):
        ids = torch.randint(0, 30000, (n,), generator=g).tolist()
        examples.append({"input_ids": ids, "labels": [-100] * (n // 3) + ids[n // 3:]})
    rows, _ = pack_examples(examples, 128)
    kernels = ["sdpa", "eager"] + (["flash_attention_2"] if env.device == "cuda"
                                   and importlib.util.find_spec("flash_attn") else [])
    dtype = torch.float32 if env.dry else torch.bfloat16
    for kernel in kernels:
        model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_path(), dtype=dtype, attn_implementation=kernel)
        model.to(env.device).config.use_cache = False
        move = lambda b: {k: v.to(env.device) if torch.is_tensor(v) else v for k, v in b.items()}  # noqa: E731
        with torch.no_grad():
            padded = model(**move(PadCollator(0)(examples))).loss.item()
            flat = model(**move(FlatteningCollator(0, kernel == "flash_attention_2")(rows))).loss.item()
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        row(f"packed = padded loss ({kernel})", f"{flat:.5f} vs {padded:.5f}", f"abs <= {tol:g}",
            abs(flat - padded) <= tol)
    if "flash_attention_2" not in kernels:
        row("packed = padded loss (flash_attention_2)", "flash-attn not installed or no GPU", "", None)


RECIPE = """[model]\npath = "bundled:tiny-qwen2"\n{extra}\n[defaults]\nmax_steps = 2\ncutoff_len = 64
per_device_train_batch_size = 2\ngradient_accumulation_steps = 1\nsave_steps = 2\nlogging_steps = 1\nloss = "{loss}"
[[stages]]\nname = "domain"\nkind = "pretrain"\n[[stages.data]]\npath = "bundled:domain_corpus.jsonl"\nformat = "text"
{sft}"""
SFT = """[[stages]]\nname = "sft"\nkind = "sft"\n[[stages.data]]\npath = "bundled:instructions.jsonl"\nformat = "messages"\n"""


def recipes_run(label: str, extra: str, loss: str, sft: bool, launcher: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "check.toml"
        path.write_text(RECIPE.format(extra=extra, loss=loss, sft=SFT if sft else ""))
        command = [*launcher, "-m", "recipes", "run", str(path), "-o", str(Path(tmp) / "run")]
        if not launcher[1:]:
            command.append("--nproc=1")
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp)
        merged = len(list((Path(tmp) / "run").rglob("model.safetensors")))
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        row(label, f"exit {done.returncode}, {merged} merged model(s), {time.perf_counter() - started:.0f} s"
            + ("" if done.returncode == 0 else f": {tail[0][:80]}"), "exit 0", done.returncode == 0 and merged >= 1)


def sharded(env: Env) -> None:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    for name, extra, package in (("FSDP", '[distributed]\nstrategy = "fsdp"', "torch"),
                                 ("DeepSpeed ZeRO-3", '[distributed]\nstrategy = "deepspeed"\nzero_stage = 3',
                                  "deepspeed")):
        if env.device != "cuda" or importlib.util.find_spec(package) is None:
            row(f"{name} step, world size 1", "needs a GPU" if env.device != "cuda" else f"{package} not installed",
                "", None)
            continue
        recipes_run(f"{name} step, world size 1", extra, "standard", False, torchrun)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 1 and fewer steps (under 3 minutes)")
    parser.add_argument("--dry-run", action="store_true", help="toy size on CPU, fp32: every code path")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    env = Env(args.dry_run, args.quick)
    started = time.perf_counter()
    checks = [lambda: memory_and_speed(env, False), lambda: memory_and_speed(env, True), lambda: fp16_overflow(env),
              lambda: packing(env), lambda: recipes_run("2-stage tiny plan via recipes run", "", "chunked", True,
                                                         [sys.executable]), lambda: sharded(env)]
    for check in checks:
        print(f"[{time.perf_counter() - started:5.0f} s] {len(ROWS)} rows", file=sys.stderr, flush=True)
        try:
            check()
        except Exception as exc:  # one failed check is one row; the others still run
            row(getattr(check, "__name__", "check"), f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}", "",
                False)
    print(f"# gpu_check on {env.name}{' --quick' if args.quick else ''}: {time.perf_counter() - started:.0f} s")
    widths = [max(len(r[i]) for r in [("check", "result", "reference", "status"), *ROWS]) for i in range(4)]
    for r in [("check", "result", "reference", "status"), tuple("-" * w for w in widths), *ROWS]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    return 1 if any(r[3] == "FAIL" for r in ROWS) else 0


if __name__ == "__main__":
    sys.exit(main())
