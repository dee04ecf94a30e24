"""QLoRA in the compute dtype: after the bitsandbytes preparation the embedding, the output head and
the norms are in the stage's dtype (not fp32), so the decoder's activations are too, the chunked loss
never casts the frozen head per chunk, and `recipes plan` books what the code loads (the tiny Qwen2
model loaded 4-bit on this CPU through the project's own loader)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from conftest import write
from recipes.builtin.quantization import BitsAndBytesOptions
from recipes.cli import main
from recipes.training.chunked_loss import chunk_precision, chunked_lm_loss
from recipes.training.model import load_model

CHUNK = 8  # several chunks in the batch below


def bnb_backend():
    from recipes.plugins.registry import get_registry

    return get_registry().backends["bitsandbytes"]


@pytest.fixture(scope="module")
def qlora_bf16(tiny_model):
    """The tiny model as a bf16 QLoRA stage loads it, with LoRA on every linear layer."""
    from peft import LoraConfig, get_peft_model

    model = load_model(str(tiny_model), bnb_backend(), BitsAndBytesOptions(), torch.bfloat16, {}, "cpu", True, "sdpa")
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    return model.train()  # as the Trainer trains it (bitsandbytes repacks CPU weights for inference in eval mode)


def batch(vocab: int, length: int = 40):
    ids = torch.randint(0, vocab, (2, length), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "labels": ids.clone()}


def test_embedding_head_and_norms_are_in_the_compute_dtype_after_the_kbit_preparation(qlora_bf16):
    import bitsandbytes as bnb

    base = qlora_bf16.get_base_model()
    assert base.get_input_embeddings().weight.dtype == torch.bfloat16
    assert base.get_output_embeddings().weight.dtype == torch.bfloat16
    norms = {name: p.dtype for name, p in base.named_parameters() if "norm" in name}
    assert norms and set(norms.values()) == {torch.bfloat16}, norms
    frozen = {p.dtype for name, p in base.named_parameters()
              if not isinstance(p, bnb.nn.Params4bit) and "lora_" not in name}
    assert frozen == {torch.bfloat16}
    assert {p.dtype for name, p in base.named_parameters() if "lora_" in name} == {torch.float32}  # peft's own
    assert any(isinstance(p, bnb.nn.Params4bit) for p in base.parameters())  # really 4-bit
    assert not any(p.requires_grad for name, p in base.named_parameters() if "lora_" not in name)


def test_the_decoder_runs_in_the_compute_dtype_under_autocast(qlora_bf16):
    base = qlora_bf16.get_base_model()
    layer = base.model.layers[0]
    seen = {}

    def record(name):
        def hook(module, args, out):
            seen.setdefault(name, (out[0] if isinstance(out, tuple) else out).dtype)
        return hook

    hooks = [module.register_forward_hook(record(name))
             for name, module in (("layer", layer), ("up_proj", layer.mlp.up_proj), ("act", layer.mlp.act_fn),
                             ("final_norm", base.model.norm))]
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            qlora_bf16(input_ids=batch(base.config.vocab_size)["input_ids"])
    finally:
        for hook in hooks:
            hook.remove()
    assert seen == {name: torch.bfloat16 for name in ("layer", "up_proj", "act", "final_norm")}, seen


def head_casts(model, inputs, chunk: int) -> int:
    """aten::_to_copy calls on a tensor of the output head's shape during one chunked loss, forward
    and backward, under the stage's bf16 chunk precision."""
    from torch.profiler import ProfilerActivity, profile

    shape = list(model.get_base_model().get_output_embeddings().weight.shape)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        with chunk_precision("cpu", torch.bfloat16):
            loss = chunked_lm_loss(model, inputs, chunk_size=chunk)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(1 for event in prof.events()
               if event.name == "aten::_to_copy" and event.input_shapes and event.input_shapes[0] == shape)


def test_the_chunked_loss_never_casts_the_frozen_head_per_chunk(qlora_bf16, tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    inputs = batch(qlora_bf16.config.vocab_size)
    labelled = inputs["labels"][:, 1:].numel()
    assert labelled // CHUNK >= 4  # the loop runs several chunks
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as accelerate wraps the forward
        assert head_casts(qlora_bf16, inputs, CHUNK) == 0  # the head is already bf16
    # a frozen fp32 head (a model loaded in fp32, bf16 compute): the loss casts it once per call, not
    # per chunk (the model's own forward casts it once more, for its empty slice of logits)
    fp32 = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    fp32 = get_peft_model(fp32, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    assert not fp32.get_base_model().get_output_embeddings().weight.requires_grad
    with torch.autocast("cpu", dtype=torch.bfloat16):
        many, one = head_casts(fp32, inputs, CHUNK), head_casts(fp32, inputs, labelled)
    assert many == one <= 2, (many, one)  # the control, one chunk: the same count


def test_the_plan_books_the_non_quantized_weights_as_the_loader_keeps_them(qlora_bf16, tiny_model):
    import bitsandbytes as bnb

    from recipes.family import family
    from recipes.planning.memory import weight_bytes

    shape = family().shape_of(json.loads((tiny_model / "config.json").read_text()))
    kept = sum(p.numel() * p.element_size() for name, p in qlora_bf16.get_base_model().named_parameters()
               if not isinstance(p, bnb.nn.Params4bit) and "lora_" not in name)
    assert kept == (shape.total_parameters - shape.linear_parameters) * 2
    quant = {"backend": "bitsandbytes", "bits": 4, "double_quant": True}
    linear_only = weight_bytes(shape, "bf16", quant) - kept
    assert 0 < linear_only < shape.linear_parameters  # the blocks' linear weights: about half a byte each


def test_recipes_plan_puts_a_7b_qlora_step_at_2048_tokens_under_9_gib(tmp_path):
    from qwen_recipes import bundled_recipes

    text = bundled_recipes()["domain_qwen_qlora"].read_text()
    text = text.replace("per_device_train_batch_size = 4\ngradient_accumulation_steps = 8",
                        "per_device_train_batch_size = 1\ngradient_accumulation_steps = 32", 1)
    recipe = write(tmp_path / "qlora7b.toml", text.replace('"bundled:', '"bundled:'))
    result = CliRunner().invoke(main, ["plan", "--json", str(recipe)])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    domain = next(stage for stage in plan["stages"] if stage["name"] == "domain")
    memory = domain["memory"]
    assert (memory["batch"], memory["cutoff_len"], memory["precision"]) == (1, 2048, "bf16")
    assert plan["model"]["total_parameters"] == 7_615_616_512
    assert memory["peak"] <= 9.0 * 2 ** 30, memory["peak"] / 2 ** 30
    # the embedding and the head in bf16: 2 x 151,936 x 3,584 x 2 bytes, not x 4
    assert memory["weights"] < 6.0 * 2 ** 30
