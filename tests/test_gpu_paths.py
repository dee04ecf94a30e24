"""The decisions a GPU run takes, proven here on CPU with the real libraries: FSDP arguments as
transformers 5 builds them (FSDP2), the precision and attention picked from the GPU's capability and
transformers' own flash-attention check, packed rows per attention kernel, the non-finite-gradient
guard when DeepSpeed has already stepped, evaluation under the training autocast, no fork after CUDA,
where a model loads, and the Liger and torchao plugins' memory refusals. Each decision that depends on
a GPU is a pure function of what the GPU reports, so it runs here without faking torch."""

from __future__ import annotations

import math
import typing

import pytest
import torch
from click.testing import CliRunner

from conftest import write
from recipes.cli import main
from recipes.errors import RecipeError

BASE = ('[model]\npath = "bundled:tiny-qwen2"\n{extra}\n[[stages]]\nname = "a"\nkind = "pretrain"\n'
        '[[stages.data]]\npath = "corpus.jsonl"\nformat = "text"\n')


@pytest.fixture(scope="module")
def model(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation="sdpa")
    model.config.use_cache = False  # as recipes.training.model.load_model leaves it (packing needs it)
    return model


# --- FSDP is FSDP2 -----------------------------------------------------------------------------------

def test_training_arguments_build_for_every_fsdp_sharding_the_schema_accepts(tmp_path):
    from transformers import TrainingArguments

    from recipes.config.load import load_recipe
    from recipes.config.schema import Distributed
    from recipes.training.trainer import sharding_arguments

    write(tmp_path / "corpus.jsonl", '{"text": "Bees."}\n')
    values = [v for v in typing.get_args(Distributed.model_fields["fsdp_sharding"].annotation) if v is not None]
    values = [a for v in values for a in typing.get_args(v)] or values  # Optional[Literal[...]]
    assert {"full_shard", "shard_grad_op"} <= set(values)
    built = {}
    for index, sharding in enumerate([None, *values]):
        for offload in [index % 2 == 1]:  # both ways across the values, one validate each
            extra = ('[distributed]\nstrategy = "fsdp"\n' + (f'fsdp_sharding = "{sharding}"\n' if sharding else "")
                     + f"cpu_offload = {str(offload).lower()}\n[defaults]\nloss = \"standard\"")
            path = write(tmp_path / f"{sharding}-{offload}.toml", BASE.format(extra=extra))
            result = CliRunner().invoke(main, ["validate", str(path)])
            if result.exit_code != 0:  # refused by validate, in one line naming the field: never at stage start
                assert result.exit_code == 2 and "Traceback" not in result.output, result.output
                [line] = [line for line in result.output.splitlines() if "fsdp_sharding" in line]
                assert "FSDP1" in line and '"full_shard"' in line, line
                continue
            settings = load_recipe(str(path)).recipe.distributed
            kwargs = sharding_arguments(settings, "cuda", ["Qwen2DecoderLayer"])
            args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[], **kwargs)
            plugin = args.fsdp_plugin_args
            assert plugin["fsdp_version"] == 2 and "use_orig_params" not in plugin, plugin
            assert plugin["reshard_after_forward"] is ((sharding or "full_shard") == "full_shard")
            assert plugin.get("cpu_offload", False) is offload
            assert plugin["transformer_cls_names_to_wrap"] == "Qwen2DecoderLayer"
            built[sharding or "default"] = True
    assert set(built) == {"default", "full_shard", "shard_grad_op"}  # hybrid_shard: refused above


def test_the_chunked_loss_refusal_under_fsdp_gives_fsdp2s_reason(tmp_path):
    write(tmp_path / "corpus.jsonl", '{"text": "Bees."}\n')
    path = write(tmp_path / "r.toml", BASE.format(extra='[distributed]\nstrategy = "fsdp"'))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    [line] = [line for line in result.output.splitlines() if 'loss "chunked" with strategy "fsdp"' in line]
    assert "FSDP2" in line and "backward hooks sit on the model's outputs" not in line


# --- precision and attention ---------------------------------------------------------------------------

def test_auto_precision_never_picks_emulated_bf16():
    from recipes.training.precision import auto_precision, pick_precision

    assert auto_precision(None)[0] == "fp32"
    for capability in [(6, 1), (7, 0), (7, 5)]:  # P40, V100, T4: bf16 only emulated
        precision, why = auto_precision(capability, "Tesla T4")
        assert precision == "fp16" and "emulates bf16" in why and "Tesla T4" in why
    for capability in [(8, 0), (8, 6), (8, 9), (9, 0), (10, 0)]:
        assert auto_precision(capability, "GPU")[0] == "bf16"
    expected = "fp32" if not torch.cuda.is_available() else auto_precision(tuple(torch.cuda.get_device_capability()))[0]
    assert pick_precision("auto")[0] == expected  # the function the stage calls uses this decision


def test_attention_uses_transformers_check_and_never_flash_in_fp32(tmp_path, monkeypatch):
    import importlib.util

    from transformers.utils import is_flash_attn_2_available

    from recipes.training.precision import flash_attention_available, pick_attention

    # flash-attn 4 installs a module of the same name, without the flash-attn 2 kernels transformers calls
    write(tmp_path / "flash_attn" / "__init__.py", '__version__ = "4.0.0b4"\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    assert importlib.util.find_spec("flash_attn") is not None  # what the old check looked at
    assert flash_attention_available() is bool(is_flash_attn_2_available()) is False
    assert pick_attention("auto", "cuda", "bf16")[0] == "sdpa"

    assert pick_attention("auto", "cuda", "bf16", flash_available=True)[0] == "flash_attention_2"
    assert pick_attention("auto", "cuda", "fp16", flash_available=True)[0] == "flash_attention_2"
    attention, why = pick_attention("auto", "cuda", "fp32", flash_available=True)
    assert attention == "sdpa" and "fp32" in why
    assert pick_attention("auto", "cpu", "fp32", flash_available=True)[0] == "sdpa"
    with pytest.raises(RecipeError, match='no fp32 kernel.*precision = "bf16"'):
        pick_attention("flash_attention_2", "cuda", "fp32")
    assert pick_attention("flash_attention_2", "cuda", "bf16")[0] == "flash_attention_2"


def test_validate_refuses_flash_attention_in_fp32(tmp_path):
    write(tmp_path / "corpus.jsonl", '{"text": "Bees."}\n')
    for precision, code in (("fp32", 2), ("bf16", 0)):
        extra = f'[defaults]\nprecision = "{precision}"\nattn_implementation = "flash_attention_2"'
        result = CliRunner().invoke(main, ["validate", str(write(tmp_path / "r.toml", BASE.format(extra=extra)))])
        assert result.exit_code == code, result.output
    [line] = [line for line in CliRunner().invoke(main, ["validate", str(write(
        tmp_path / "r.toml", BASE.format(extra='[defaults]\nprecision = "fp32"\nattn_implementation = "flash_attention_2"')))]
    ).output.splitlines() if "no fp32 kernel" in line]
    assert "attn_implementation" in line and "Traceback" not in line


# --- packed rows per attention kernel ------------------------------------------------------------------

def _packed_rows(tokenizer):
    from recipes.data.packing import pack_examples

    examples = []
    for i, n in enumerate([40, 23, 17, 30, 9, 25]):
        ids = tokenizer(" ".join(f"bee{i}" for _ in range(n)))["input_ids"][:n]
        examples.append({"input_ids": ids, "labels": ids})
    rows, _ = pack_examples(examples, 64)
    return rows


def _attention_masks(model, batch) -> list:
    seen = []
    layer = model.model.layers[0].self_attn
    handle = layer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("attention_mask")), with_kwargs=True)
    try:
        with torch.no_grad():
            model(**{k: v for k, v in batch.items() if k != "labels"})
    finally:
        handle.remove()
    return seen


def test_with_sdpa_packed_rows_stay_one_per_sequence_and_flash_names_flatten(model, tokenizer):
    from recipes.data.collate import FlatteningCollator, packed_collator
    from recipes.data.packing import check_packable

    rows = _packed_rows(tokenizer)
    assert len(rows) >= 3
    config = model.config
    assert config._attn_implementation == "sdpa"
    check_packable(model)
    batch = packed_collator(model, 0)(rows)
    width = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == (len(rows), width) and "cu_seq_lens_q" not in batch
    [mask] = _attention_masks(model, batch)
    # one block per row of the batch, never one over the whole micro-batch (len(rows) x width squared)
    assert mask is not None and tuple(mask.shape[-2:]) == (width, width) and mask.shape[0] == len(rows)
    flat = FlatteningCollator(0)(rows)
    [flat_mask] = _attention_masks(model, flat)
    total = sum(len(r["input_ids"]) for r in rows)
    assert tuple(flat_mask.shape[-2:]) == (total, total)  # control: what flattening costs sdpa

    saved = config._attn_implementation_internal
    try:
        for name in ("flash_attention_2", "kernels-community/flash-attn2", "kernels-community/flash-attn3"):
            config._attn_implementation_internal = name
            check_packable(model)  # accepted for packing
            batch = packed_collator(model, 0)(rows)
            assert batch["input_ids"].shape == (1, total) and batch["cu_seq_lens_q"][-1] == total, name
            assert FlatteningCollator.for_model(model, 0).flash_kwargs
        config._attn_implementation_internal = "flex_attention"
        with pytest.raises(RecipeError, match="packing is verified with attention"):
            check_packable(model)
    finally:
        config._attn_implementation_internal = saved


def test_packed_rows_keep_each_tokens_source(model, tokenizer):
    from recipes.data.packing import PackedCollator

    rows = _packed_rows(tokenizer)
    for index, row in enumerate(rows):
        row["sources"] = [index % 2] * len(row["input_ids"])
    batch = PackedCollator(0)(rows)
    assert batch["sources"].shape == batch["input_ids"].shape
    assert batch["sources"][1, :len(rows[1]["input_ids"])].eq(1).all()


# --- the gradient guard under DeepSpeed ----------------------------------------------------------------

def test_the_gradient_guard_reads_deepspeeds_norm_when_the_gradients_are_gone(model):
    from accelerate import Accelerator
    from transformers import TrainerControl, TrainerState

    from recipes.training.trainer import NonFiniteError, StageGuard, engine_grad_norm, gradient_finite

    assert engine_grad_norm(Accelerator(cpu=True)) == (False, None)  # no engine: the .grad path
    weight = model.model.norm.weight
    weight.requires_grad_(True)
    try:
        weight.grad = torch.full_like(weight, float("nan"))
        assert gradient_finite(model) is False
        weight.grad = torch.ones_like(weight)
        assert gradient_finite(model) is True
        weight.grad = None  # DeepSpeed stepped and zeroed them inside backward
        assert gradient_finite(model, (True, float("inf"))) is False
        assert gradient_finite(model, (True, 3.5)) is True
        assert gradient_finite(model, (True, None)) is None

        state, control = TrainerState(), TrainerControl()
        guard = StageGuard(lambda folder, step: None, engine=lambda: (True, float("nan")))
        with pytest.raises(NonFiniteError, match="gradient is non-finite"):
            guard.on_pre_optimizer_step(None, state, control, model=model)
        unseen = StageGuard(lambda folder, step: None, engine=lambda: (True, None))
        unseen.on_pre_optimizer_step(None, state, control, model=model)  # says it cannot see; no raise
        assert unseen.unseen_said
    finally:
        weight.grad = None
        weight.requires_grad_(False)


# --- evaluation before training under the training autocast --------------------------------------------

def test_evaluation_before_training_runs_under_the_same_autocast_as_after(tmp_path, tiny_model, tokenizer):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, TrainingArguments

    from recipes.builtin.losses import ChunkedOptions, build_chunked
    from recipes.data.tokenization import PadCollator
    from recipes.training.trainer import StageTrainer

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation="sdpa")
    model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    ids = tokenizer("Bees make honey in the hive, and the hive keeps them warm.")["input_ids"]
    data = [{"input_ids": ids, "labels": ids}] * 2
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, bf16=True, max_steps=1, report_to=[],
                             per_device_train_batch_size=1, save_strategy="no", disable_tqdm=True,
                             remove_unused_columns=False)
    trainer = StageTrainer(model=model, args=args, train_dataset=data, eval_dataset={"val": data},
                           data_collator=PadCollator(0), lm_loss=build_chunked(model, ChunkedOptions()))
    seen = []
    layer = model.get_base_model().model.layers[0]
    layer.register_forward_pre_hook(lambda module, args: seen.append(torch.is_autocast_enabled("cpu")))

    def evaluated():
        seen.clear()
        metrics = trainer.evaluate({"val": data})
        assert math.isfinite(metrics["eval_val_loss"]) and metrics["eval_val_tokens"] > 0
        return set(seen)

    assert evaluated() == {True}  # before train(): accelerate has not wrapped forward yet
    trainer.train()
    assert evaluated() == {True}


# --- no fork after CUDA, where a model loads -----------------------------------------------------------

def test_the_tokenizing_pool_forks_only_without_a_cuda_context():
    from recipes.data.build import cuda_initialized, start_method

    methods = ["fork", "spawn", "forkserver"]
    assert start_method(methods, cuda_live=False) == "fork"
    assert start_method(methods, cuda_live=True) == "spawn"
    assert start_method(["spawn"], cuda_live=False) == "spawn"
    assert cuda_initialized() is torch.cuda.is_initialized()  # what _pool passes: this process's state


def test_the_spawned_tokenizing_pool_prepares_what_the_forked_one_does(tokenizer, tmp_path, monkeypatch):
    """The pool a GPU process starts (spawn: the tokenizer pickled to fresh interpreters) gives the same
    store as the forked one; here this process has no CUDA, so it is told it has."""
    from recipes.data import build
    from recipes.data.prepare import prepare
    from test_store import BUNDLED, _plan, _recipe

    monkeypatch.setattr(build, "CHUNK_CHARACTERS", 3000)
    monkeypatch.setattr(build, "CHUNK_RECORDS", 7)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # as recipes run sets it: documents go to processes
    path = _recipe(tmp_path, "pretrain", str(BUNDLED / "domain_corpus.jsonl"), "text", "val_size = 0.1\n")
    stores = []
    for name, live in (("fork", False), ("spawn", True)):
        monkeypatch.setenv("RECIPES_CACHE", str(tmp_path / name))
        monkeypatch.setattr(build, "cuda_initialized", lambda live=live: live)
        said = []
        data = prepare(_plan(path).stages[0], tokenizer, said.append, workers=2)
        assert any("2 processes" in line for line in said), said
        stores.append(([data.train[i] for i in range(len(data.train))], data.stats.tokens))
    assert stores[0] == stores[1] and stores[0][1] > 0


def test_a_model_on_a_gpu_loads_straight_to_its_device_unless_sharded():
    from recipes.training.model import loads_to_device

    assert loads_to_device(quantizes=False, device="cuda")  # a bf16 7B: no 15 GB host copy per rank
    assert loads_to_device(quantizes=True, device="cuda") and loads_to_device(quantizes=True, device="cpu")
    assert not loads_to_device(quantizes=False, device="cuda", sharded=True)  # FSDP / ZeRO-3 shard from the host
    assert not loads_to_device(quantizes=False, device="cpu")


# --- plugins: Liger with trained token rows, torchao without checkpointing ----------------------------

def test_liger_refuses_trained_token_rows_before_anything_else(tiny_model, tokenizer):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from recipes.training import token_rows
    from recipes.training.model import lora_config
    from recipes_liger.plugin import build_liger, head_refusal

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    rows = token_rows.TokenRows(("<|im_start|>",), (tokenizer.convert_tokens_to_ids("<|im_start|>"),), "test")
    settings = type("S", (), dict(lora_rank=2, lora_alpha=4, lora_dropout=0.0, lora_target=["q_proj"], use_rslora=False, use_dora=False,
                                       init_lora_weights="default"))()
    model = get_peft_model(model, lora_config(settings, token_rows.lora_arguments(model, rows)))
    assert head_refusal(model.get_base_model().get_output_embeddings()) is not None
    with pytest.raises(RecipeError, match='liger" with trained token rows.*train_tokens = false'):
        build_liger(model, None)
    plain = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    assert head_refusal(plain.get_output_embeddings()) is None  # control


def test_torchao_without_gradient_checkpointing_is_refused(tmp_path, tiny_model):
    from transformers import AutoModelForCausalLM

    from recipes.plugins.registry import get_registry

    backend = get_registry().backends["torchao"]
    options = backend.options_model()
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32,
                                                 **backend.model_kwargs(options, torch.float32))
    # the finding: each int8 matmul saves a dequantized copy of its whole weight for the backward
    proj = model.model.layers[0].mlp.down_proj
    saved = []
    x = torch.randn(2, proj.in_features, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        proj(x).sum()
    shape = tuple(proj.weight.shape)
    copies = [t for t in saved if type(t) is torch.Tensor and tuple(t.shape) in (shape, shape[::-1])]
    assert copies and copies[0].dtype == torch.float32  # a plain full-precision tensor of the whole weight
    with pytest.raises(RecipeError, match="gradient_checkpointing = true"):
        backend.prepare(model, options, False)
    assert backend.prepare(model, options, True).is_gradient_checkpointing
