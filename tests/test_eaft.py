"""EAFT (entropy-adaptive fine-tuning) inside the chunked loss: the same loss and LoRA gradients as
the full-logits formula (as LLaMA-Factory and axolotl compute it), opt-in through ``loss_options``,
and the plain loss unchanged when it is off."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recipes.builtin.losses import ChunkedOptions, build_chunked


@pytest.fixture(scope="module")
def lora_model(tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights="gaussian"))
    return model


def _inputs(vocab):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (2, 24), generator=generator)
    labels = ids.clone()
    labels[0, :9] = -100  # a prompt without labels
    labels[1, 20:] = -100  # padding
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def full_logits_eaft(model, inputs, alpha, k, num_items=None):
    """EAFT as the full-logits implementations compute it: every position's logits, the top-k entropy
    normalised by log k, to the power alpha, detached, times each token's cross-entropy."""
    labels = inputs["labels"]
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits.float()
    logits, targets = logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)
    keep = targets != -100
    each = F.cross_entropy(logits[keep], targets[keep], reduction="none")
    with torch.no_grad():
        log_p = logits[keep].topk(k, dim=-1).values.log_softmax(-1)
        weight = (-(log_p.exp() * log_p).sum(-1) / math.log(k)) ** alpha
    return (each * weight).sum() / (keep.sum() if num_items is None else num_items)


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("alpha, k, num_items", [(1.0, 20, None), (0.5, 7, 50)])
def test_chunked_eaft_equals_the_full_logits_reference(lora_model, alpha, k, num_items):
    inputs = _inputs(lora_model.config.vocab_size)
    loss_fn = build_chunked(lora_model, ChunkedOptions(chunk_size=5, eaft=True, eaft_alpha=alpha, eaft_top_k=k))
    lora_model.zero_grad()
    ours = loss_fn(lora_model, inputs, num_items)
    ours.backward()
    ours_grads = _grads(lora_model)
    lora_model.zero_grad()
    reference = full_logits_eaft(lora_model, inputs, alpha, k, num_items)
    reference.backward()
    theirs = _grads(lora_model)
    assert abs(ours.item() - reference.item()) < 1e-5, (ours.item(), reference.item())
    assert ours_grads.keys() == theirs.keys() and ours_grads
    worst = max((ours_grads[n] - theirs[n]).abs().max().item() for n in theirs)
    assert worst < 1e-5, worst
    # control: the weighting does change the loss (the weights are below 1)
    plain = build_chunked(lora_model, ChunkedOptions(chunk_size=5))(lora_model, inputs, num_items)
    assert plain.item() - ours.item() > 1e-3


def test_off_the_loss_is_the_models_own_and_evaluation_stays_plain(lora_model):
    inputs = _inputs(lora_model.config.vocab_size)
    plain = build_chunked(lora_model, ChunkedOptions(chunk_size=5))
    eaft = build_chunked(lora_model, ChunkedOptions(chunk_size=5, eaft=True))
    with torch.no_grad():
        own = lora_model(**inputs).loss
        assert abs(plain(lora_model, inputs).item() - own.item()) < 1e-5
        # without gradients (evaluation) the EAFT loss is the plain cross-entropy: perplexities stay perplexities
        assert abs(eaft(lora_model, inputs).item() - own.item()) < 1e-5
    assert ChunkedOptions().eaft is False  # opt-in


def test_loss_options_are_validated(tmp_path):
    from click.testing import CliRunner

    from conftest import GOOD_RECIPE, write
    from recipes.cli import main

    write(tmp_path / "corpus.jsonl", '{"text": "Bees."}\n')
    write(tmp_path / "chat.jsonl", '{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}\n')
    good = GOOD_RECIPE.replace("[[stages]]", "[[stages]]\nloss_options = {eaft = true, eaft_alpha = 0.5}", 1)
    bad = GOOD_RECIPE.replace("[[stages]]", "[[stages]]\nloss_options = {eaft = true, eaft_top_k = 1}", 1)
    assert CliRunner().invoke(main, ["validate", str(write(tmp_path / "good.toml", good))]).exit_code == 0
    result = CliRunner().invoke(main, ["validate", str(write(tmp_path / "bad.toml", bad))])
    assert result.exit_code == 2 and "eaft_top_k" in result.output, result.output
