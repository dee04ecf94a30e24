"""Packing is exact: packed and unpacked batches of the same SFT examples give the same loss and the
same LoRA gradients, and an example's logits do not depend on what it is packed with (real tiny Qwen2,
real tokenizer, sdpa and eager attention, fp32)."""

from __future__ import annotations

import pytest

from recipes.data.tokenization import IGNORE_INDEX, DataStats, PadCollator, sft_examples
from recipes.errors import RecipeError
from recipes.data.collate import FlatteningCollator
from recipes.data.packing import PACKED_ATTENTION, PackedCollator, check_packable, pack_examples

# every attention implementation that runs here (flash_attention_2 needs a GPU: bench/gpu_check.py)
RUNS_HERE = [a for a in PACKED_ATTENTION if a != "flash_attention_2"]

ENDOFTEXT = 151643
CUTOFF = 160

CONVERSATIONS = [
    [("Name a bee.", "Apis mellifera."), ("And a wasp?", "Vespula vulgaris.")],
    [("蜂王多大？", "大约两厘米。")],
    [("How do bees see?", "They see ultraviolet light, which guides them to nectar in flowers.")],
    [("Hi", "Hello!")],
    [("Why do bees swarm?", "A colony splits when it outgrows its hive; the old queen leaves with half.")],
    [("Q", "A"), ("Q2", "A2"), ("Q3", "A3")],
]


@pytest.fixture(scope="module")
def examples(tokenizer):
    records = [{"messages": [{"role": r, "content": t} for q, a in turns for r, t in (("user", q), ("assistant", a))]}
               for turns in CONVERSATIONS]
    return sft_examples(records, tokenizer, CUTOFF, DataStats())


def lora_model(tiny_model, attention: str):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation=attention)
    # random A and B (B = 0 by default would leave A without gradient, hiding a mistake there)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                             init_lora_weights=False))
    model.eval()
    model.config.use_cache = False  # as a stage sets it; check_packable refuses a model with a cache
    check_packable(model)
    return model


def assert_same_gradient(ours, reference, name, relative=1e-4):
    """Equal to fp32 precision relative to the gradient's own size (an absolute tolerance alone would
    pass a small gradient that is 10% off); the floor shows the gradient is far from zero."""
    import torch

    assert reference.abs().max() > 1e-3, name  # far from zero (the smallest here are near 1e-2)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4, msg=name)
    assert (ours - reference).norm() / reference.norm() < relative, name


def loss_and_grads(model, batch):
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    return loss.item(), grads


def test_best_fit_decreasing_fills_rows_and_keeps_every_token(examples):
    rows, stats = pack_examples(examples, CUTOFF)
    assert all(len(row["input_ids"]) <= CUTOFF for row in rows)
    assert sorted(t for row in rows for t in row["input_ids"]) == sorted(t for e in examples for t in e["input_ids"])
    assert stats.rows == len(rows) < len(examples) and stats.tokens == sum(len(e["input_ids"]) for e in examples)
    assert stats.efficiency == stats.tokens / (len(rows) * CUTOFF) and "of token slots used" in stats.describe()
    for row in rows:  # positions restart at each example; an example's first label is never learned
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
        assert starts[0] == 0 and all(row["labels"][i] == IGNORE_INDEX for i in starts)
    # an example that fits no open row opens a new one; a too-long example is refused
    assert pack_examples([{"input_ids": [1] * 3, "labels": [1] * 3}] * 3, 5)[1].rows == 3
    with pytest.raises(ValueError, match="example 0 has 6 tokens"):
        pack_examples([{"input_ids": [1] * 6, "labels": [1] * 6}], 5)


def test_collator_numbers_padding_as_its_own_sequence_and_sends_no_mask():
    rows = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "position_ids": [0, 1, 0]},
            {"input_ids": [8], "labels": [-100], "position_ids": [0]}]
    batch = PackedCollator(pad_id=ENDOFTEXT)(rows)
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    assert batch["position_ids"].tolist() == [[0, 1, 0], [0, 0, 1]]
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, ENDOFTEXT, ENDOFTEXT]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, -100]]


@pytest.mark.parametrize("attention", RUNS_HERE)
def test_packed_and_unpacked_give_the_same_loss_and_lora_gradients(tiny_model, examples, attention):
    import torch

    model = lora_model(tiny_model, attention)
    rows, stats = pack_examples(examples, CUTOFF)
    assert stats.rows < len(examples)
    # one batch each, so that both losses are the mean over the same label tokens
    unpacked_loss, unpacked_grads = loss_and_grads(model, PadCollator(ENDOFTEXT)(examples))
    flat_batch = FlatteningCollator(ENDOFTEXT)(rows)
    assert flat_batch["input_ids"].shape == (1, stats.tokens)  # one row, no padding
    for collate in (PackedCollator(ENDOFTEXT), FlatteningCollator(ENDOFTEXT)):
        packed_loss, packed_grads = loss_and_grads(model, collate(rows))
        assert abs(packed_loss - unpacked_loss) < 1e-5, type(collate).__name__
        assert any("lora_A" in name for name in packed_grads) and any("lora_B" in name for name in packed_grads)
        for name, grad in unpacked_grads.items():
            assert_same_gradient(packed_grads[name], grad, name)


def test_flattening_collator_lays_rows_end_to_end_with_flash_boundaries():
    rows = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "position_ids": [0, 1, 0]},
            {"input_ids": [8, 9], "labels": [-100, 9], "position_ids": [0, 1]}]
    batch = FlatteningCollator(ENDOFTEXT)(rows)
    assert set(batch) == {"input_ids", "labels", "position_ids"}  # no attention_mask: block mask from positions
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]] and batch["labels"].tolist() == [[-100, 6, 7, -100, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 0, 0, 1]]
    flash = FlatteningCollator(ENDOFTEXT, flash_kwargs=True)(rows)
    assert flash["cu_seq_lens_q"].tolist() == flash["cu_seq_lens_k"].tolist() == [0, 2, 3, 5]
    assert flash["cu_seq_lens_q"].dtype.is_floating_point is False and str(flash["cu_seq_lens_q"].dtype) == "torch.int32"
    assert flash["max_length_q"] == flash["max_length_k"] == 2


@pytest.mark.parametrize("attention", RUNS_HERE)
def test_an_example_does_not_see_what_it_is_packed_with(tiny_model, examples, attention):
    import torch

    model = lora_model(tiny_model, attention)
    target = examples[2]
    n = len(target["input_ids"])
    collate = PackedCollator(ENDOFTEXT)
    with torch.no_grad():
        alone = model(**collate(pack_examples([target], CUTOFF)[0])).logits[0, :n]
        for companion in (examples[1], examples[4]):
            [row], _ = pack_examples([companion, target], CUTOFF)
            # best fit decreasing puts the longer one first; find the target by its tokens
            start = 0 if row["input_ids"][:n] == target["input_ids"] else len(row["input_ids"]) - n
            assert row["input_ids"][start:start + n] == target["input_ids"] and start + n <= len(row["input_ids"])
            packed = model(**collate([row])).logits[0, start:start + n]
            torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)
        # the control: with an all-ones attention mask (LLaMA-Factory's plain packing) it does see them
        [row], _ = pack_examples([examples[4], target], CUTOFF)
        start = len(row["input_ids"]) - n
        crossed = model(**collate([row]), attention_mask=torch.ones(1, len(row["input_ids"]), dtype=torch.long))
        assert not torch.allclose(crossed.logits[0, start:start + n], alone, atol=1e-3)


def test_a_model_that_would_ignore_the_packing_is_refused(tiny_model):
    model = lora_model(tiny_model, "sdpa")
    model.config.use_cache = True
    with pytest.raises(RecipeError, match="use_cache"):
        check_packable(model)
    model.config.use_cache = False
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(RecipeError, match="verified with attention sdpa, eager, flash_attention_2; this model uses "
                       "attention 'flex_attention'"):
        check_packable(model)
