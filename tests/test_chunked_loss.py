"""The chunked loss is the standard loss: same value (1e-5) and same LoRA gradients (1e-4) in fp32, on
pre-training and SFT batches, padded and packed, tied and untied output layers, with gradient
checkpointing, with a trainable output layer, and with the Trainer's num_items_in_batch (real tiny
Qwen2 with the genuine tokenizer, peft LoRA)."""

from __future__ import annotations

import pytest

from recipes.data.tokenization import DataStats, PadCollator, pretrain_examples, sft_examples
from recipes.errors import RecipeError
from recipes.data.packing import PackedCollator, pack_examples
from test_packing import CONVERSATIONS  # short chats in English and Chinese, one with three turns
from test_packing import assert_same_gradient

ENDOFTEXT = 151643
CUTOFF = 96
CHUNK = 37  # several chunks and a ragged last one in every batch here

DOCUMENTS = ["Honey bees keep the hive at 35 degrees by fanning and clustering.",
             "蜜蜂通过跳舞告诉同伴花蜜的位置。", "Varroa mites spread viruses between colonies."] * 3


@pytest.fixture(scope="module")
def sft(tokenizer):
    records = [{"messages": [{"role": r, "content": t} for q, a in turns for r, t in (("user", q), ("assistant", a))]}
               for turns in CONVERSATIONS]
    return sft_examples(records, tokenizer, CUTOFF, DataStats())


@pytest.fixture(scope="module")
def batches(tokenizer, sft):
    """Name -> batch: pre-training blocks, SFT padded, SFT packed (the same SFT examples)."""
    pretrain = pretrain_examples([{"text": d} for d in DOCUMENTS], tokenizer, 48, DataStats())
    rows, _ = pack_examples(sft, CUTOFF)
    return {"pretrain": PadCollator(ENDOFTEXT)(pretrain), "sft": PadCollator(ENDOFTEXT)(sft),
            "sft_packed": PackedCollator(ENDOFTEXT)(rows)}


def lora_model(path=None, config=None, modules_to_save=None, checkpointing=False):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    if config is not None:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    model.config.use_cache = False
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # random A and B (B = 0 by default would leave A without gradient, hiding a mistake there)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                             init_lora_weights=False, modules_to_save=modules_to_save,
                                             task_type="CAUSAL_LM"))  # as a stage builds it
    model.train()  # dropout is 0: train mode so that gradient checkpointing is active
    return model


def untied_config():
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                       initializer_range=0.1)


def loss_and_grads(model, compute):
    model.zero_grad()
    loss = compute()
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    return loss.item(), grads


def assert_same(model, batch, num_items=None):
    import torch

    from recipes.builtin.losses import standard_lm_loss
    from recipes.training.chunked_loss import chunked_lm_loss

    standard, standard_grads = loss_and_grads(model, lambda: standard_lm_loss(model, batch, num_items))
    chunked, chunked_grads = loss_and_grads(model, lambda: chunked_lm_loss(model, batch, num_items, chunk_size=CHUNK))
    assert abs(chunked - standard) < 1e-5, (chunked, standard)
    assert any("lora_A" in n for n in standard_grads) and any("lora_B" in n for n in standard_grads)
    assert standard_grads.keys() == chunked_grads.keys()
    for name, grad in standard_grads.items():
        assert_same_gradient(chunked_grads[name], grad, name)
    return chunked_grads



@pytest.fixture(scope="module")
def tied(tiny_model):
    return lora_model(tiny_model)


@pytest.mark.parametrize("kind", ["pretrain", "sft", "sft_packed"])
def test_tied_output_layer(tied, batches, kind):
    assert tied.get_base_model().config.tie_word_embeddings
    assert_same(tied, batches[kind])


def test_num_items_in_batch_divides_like_the_trainer(tied, batches):
    labels = batches["sft"]["labels"][:, 1:].ne(-100).sum()
    assert_same(tied, batches["sft"], num_items=labels + 17)  # as if other micro-batches were accumulated
    assert_same(tied, batches["sft"], num_items=int(labels) * 2)


@pytest.mark.parametrize("kind", ["pretrain", "sft_packed"])
def test_untied_output_layer_with_gradient_checkpointing(batches, kind):
    model = lora_model(config=untied_config(), checkpointing=True)
    assert model.get_base_model().model.gradient_checkpointing
    assert_same(model, batches[kind])


def test_a_trainable_output_layer_gets_the_same_gradient(batches):
    model = lora_model(config=untied_config(), modules_to_save=["lm_head"])
    grads = assert_same(model, batches["sft"])
    assert any("lm_head" in name and "modules_to_save" in name for name in grads)


def test_packing_stays_exact_under_the_chunked_loss(tied, batches):
    import torch

    from recipes.training.chunked_loss import chunked_lm_loss

    padded, padded_grads = loss_and_grads(tied, lambda: chunked_lm_loss(tied, batches["sft"], chunk_size=CHUNK))
    packed, packed_grads = loss_and_grads(tied, lambda: chunked_lm_loss(tied, batches["sft_packed"],
                                                                        chunk_size=CHUNK))
    assert len(batches["sft_packed"]["input_ids"]) < len(batches["sft"]["input_ids"])  # really packed
    assert abs(packed - padded) < 1e-5
    for name, grad in padded_grads.items():
        assert_same_gradient(packed_grads[name], grad, name)


def test_bias_and_every_input_gradient_match_torch():
    """The kernel alone, against F.linear + F.cross_entropy, with a bias and every input trainable."""
    import torch
    import torch.nn.functional as F

    from recipes.training.chunked_loss import linear_cross_entropy

    torch.manual_seed(0)
    h, w, b = torch.randn(50, 16), torch.randn(300, 16), torch.randn(300)
    t = torch.randint(0, 300, (50,))
    results = []
    for compute in (lambda h, w, b: F.cross_entropy(F.linear(h, w, b), t, reduction="sum"),
                    lambda h, w, b: linear_cross_entropy(h, w, b, t, chunk_size=7)):
        leaves = [x.clone().requires_grad_() for x in (h, w, b)]
        loss = compute(*leaves) * 0.5  # a scaled loss: backward must scale by the incoming gradient
        loss.backward()
        results.append((loss.detach(), *[x.grad for x in leaves]))
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
    with torch.no_grad():  # evaluation: the value only
        torch.testing.assert_close(linear_cross_entropy(h, w, b, t, 7), F.cross_entropy(F.linear(h, w, b), t,
                                                                                       reduction="sum"))


def test_a_head_it_cannot_reproduce_is_refused_naming_the_way_out(tiny_model, batches):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from recipes.training.chunked_loss import chunked_lm_loss

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=2, target_modules=["q_proj", "lm_head"]))
    with pytest.raises(RecipeError, match='output layer .* carries a LoRA adapter.*loss = "standard"'):
        chunked_lm_loss(model, batches["sft"], chunk_size=CHUNK)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(r=2, target_modules=["q_proj"]))
    model.get_base_model().config.final_logit_softcapping = 30.0
    with pytest.raises(RecipeError, match="final_logit_softcapping=30.0"):
        chunked_lm_loss(model, batches["sft"], chunk_size=CHUNK)


def test_a_plugin_on_the_same_hook_provides_a_loss_and_the_builtins_build(tiny_model, tied, batches):
    """The way a faster kernel (Liger's fused linear cross-entropy on GPU) comes in: a plugin on
    register_loss_functions, found by name next to the built-ins; a clash with a built-in is refused."""
    import types

    from recipes.builtin.losses import standard_lm_loss
    from recipes.plugins.hookspecs import LossFunction, hookimpl
    from recipes.plugins.registry import get_registry

    calls = []

    def build_fused(model, options):
        calls.append(type(model).__name__)
        return standard_lm_loss  # a real kernel would go here

    plugin = types.ModuleType("fused_loss_plugin")
    plugin.register_loss_functions = hookimpl(lambda: [LossFunction("fused", build_fused, description="GPU")])
    registry = get_registry(extra_plugins=(plugin,))
    assert registry.losses["fused"].description == "GPU" and registry.hooks_of("fused_loss_plugin") == [
        "register_loss_functions"]
    assert "loss:fused" in registry.provided_by("fused_loss_plugin")
    loss = registry.losses["fused"].build(tied, registry.losses["fused"].options_model())
    assert calls == ["PeftModelForCausalLM"] and loss(tied, batches["sft"], None).item() > 0
    chunked = registry.losses["chunked"]
    options = chunked.options_model.model_validate({"chunk_size": 64})
    assert abs(chunked.build(tied, options)(tied, batches["sft"], None).item()
               - registry.losses["standard"].build(tied, None)(tied, batches["sft"], None).item()) < 1e-5
    with pytest.raises(Exception, match="chunk_size"):
        chunked.options_model.model_validate({"chunk_size": 0})
    clash = types.ModuleType("clash")
    clash.register_loss_functions = hookimpl(lambda: [LossFunction("chunked", build_fused)])
    with pytest.raises(RecipeError, match="loss function 'chunked' is provided by two plugins"):
        get_registry(extra_plugins=(clash,))


def test_training_with_the_chunked_loss_follows_the_standard_run(tiny_model, sft, tmp_path):
    """Two Trainer steps with gradient accumulation: the same logged losses and the same LoRA weights
    after, so num_items_in_batch and the accumulation scaling are the Trainer's."""
    import torch
    from transformers import TrainingArguments

    from functools import partial

    from recipes.training.chunked_loss import chunked_lm_loss
    from recipes.training.trainer import StageTrainer

    runs = []
    for lm_loss in (None, partial(chunked_lm_loss, chunk_size=CHUNK)):
        model = lora_model(tiny_model)
        args = TrainingArguments(output_dir=str(tmp_path / str(len(runs))), per_device_train_batch_size=2,
                                 gradient_accumulation_steps=2, max_steps=2, learning_rate=1e-2, logging_steps=1,
                                 # plain SGD, unclipped: the step is the gradient itself, so a wrong scale of it
                                 # moves the weights differently (Adam and clipping would hide it)
                                 optim="sgd", max_grad_norm=0.0,
                                 save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
                                 remove_unused_columns=False)
        trainer = StageTrainer(model=model, args=args, train_dataset=sft, data_collator=PadCollator(ENDOFTEXT),
                               lm_loss=lm_loss)
        trainer.train()
        losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
        runs.append((losses, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}))
    (standard_losses, standard_weights), (chunked_losses, chunked_weights) = runs
    assert len(standard_losses) == 2 and chunked_losses == pytest.approx(standard_losses, abs=1e-5)
    for name, weight in standard_weights.items():
        torch.testing.assert_close(chunked_weights[name], weight, atol=1e-4, rtol=1e-4, msg=name)
