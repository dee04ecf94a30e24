"""The dpo kind's numbers against TRL's: at step 0 our loss (sequence log-probabilities from the
chunked path, TRL's formulas) equals TRL's own DPOTrainer._compute_loss on the same batch, the
log-probabilities equal those of the full logits, and the reference log-probabilities are the SFT
model's, both for a new adapter (disabled) and for a continued one (TRL's frozen copy)."""

from __future__ import annotations

import json

import pytest

from trl_test_support import LF_DATA, caches  # noqa: F401 (an autouse fixture)


@pytest.fixture(scope="module")
def setup():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qwen_recipes.tiny import tiny_qwen2_path
    from recipes.plugins.registry import get_registry
    from recipes_trl.data import tokenize_pairs

    path = tiny_qwen2_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    entry = json.loads((LF_DATA / "dataset_info.json").read_text())["dpo_en_demo"]
    fmt = get_registry().formats["sharegpt_preference"]
    records = list(fmt.read(LF_DATA / entry["file_name"], fmt.options_model(**entry["columns"])))
    examples, _ = tokenize_pairs(records[:4], tokenizer, 128, 48)
    torch.manual_seed(0)
    return path, tokenizer, examples


def _trainer(tmp_path, model, tokenizer, examples, chaining: str, earlier=None, options=None):
    from transformers import TrainingArguments

    from recipes.api import KindTraining
    from recipes_trl.data import PreparedData
    from recipes_trl.dpo import DPOOptions, build_dpo

    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, per_device_train_batch_size=2,
                             per_device_eval_batch_size=2, report_to=[], remove_unused_columns=False, max_steps=1)
    said = []
    context = KindTraining("align", None, options or DPOOptions(), tokenizer, model, chaining, earlier, args, [], 16,
                           said.append)
    return build_dpo(context, PreparedData(examples, {"val": examples})), said


def _full_logit_logps(model, batch):
    """TRL's definition on the full logits: log_softmax over the vocabulary, the next token picked."""
    import torch
    from trl.trainer.utils import selective_log_softmax

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    per_token = selective_log_softmax(logits[:, :-1].float(), batch["input_ids"][:, 1:])
    return (per_token * batch["completion_mask"][:, 1:]).sum(1)


def _perturb(model, name: str = "default", scale: float = 0.05):
    import torch

    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, parameter in model.named_parameters():
            if f"lora_B.{name}" in key:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)


def test_dpo_loss_at_step_zero_equals_trls_and_the_reference_is_the_starting_model(setup, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl import DPOTrainer

    path, tokenizer, examples = setup
    sft = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                            LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    built, said = _trainer(tmp_path, policy, tokenizer, examples, "merge")
    trainer = built.trainer
    assert "ref" not in trainer.model.peft_config and "the new adapter disabled" in said[0]
    start = built.evaluate()["val"]  # step 0: the policy is its reference, every implicit reward is 0
    assert (start["accuracy"], start["margin"], start["pairs"]) == (0.5, 0.0, 4)
    batch = trainer.data_collator(examples[:2])
    at_start = trainer._compute_loss(trainer.model, batch, False)
    assert abs(float(at_start.detach()) - float(DPOTrainer._compute_loss(trainer, trainer.model, batch, False).detach())) < 1e-5
    assert abs(float(at_start.detach()) - 0.693147) < 1e-5  # step 0: the policy is its reference, sigmoid loss log 2
    _perturb(trainer.model)  # a policy that has moved: the comparisons below are not of equal numbers

    logps, _ = trainer.log_probs(trainer.model, batch)
    # sums over ~100 answer tokens of log-probs near -10 (a random tiny model): float32 agrees to ~1e-7 relative
    assert torch.allclose(logps.detach(), _full_logit_logps(trainer.model, batch), atol=1e-4, rtol=1e-6)
    reference, _ = trainer.reference_log_probs(batch)
    sft_logps = _full_logit_logps(sft, batch)
    assert torch.allclose(reference, sft_logps, atol=1e-4, rtol=1e-6)  # the reference is the model it started from
    assert (logps.detach() - sft_logps).abs().max() > 1e-3  # control: the policy is not

    for names, weights in ((["sigmoid"], [1.0]), (["ipo"], [1.0]), (["sigmoid", "sft"], [1.0, 0.2]), (["hinge"], [1.0])):
        trainer.loss_types, trainer.loss_weights = names, weights
        ours = trainer._compute_loss(trainer.model, batch, False).detach()
        theirs = DPOTrainer._compute_loss(trainer, trainer.model, batch, False).detach()  # TRL's own computation
        # within 1e-5 (relative for a loss above 1: IPO's squares are ~25 here, float32 keeps 7 digits)
        assert abs(float(ours) - float(theirs)) < 1e-5 * max(1.0, abs(float(theirs))), (names, float(ours), float(theirs))
        assert abs(float(ours) - 0.6931) > 1e-4 or names != ["sigmoid"]  # not the trivial log 2 of step 0
    # the gradient flows to the adapter
    trainer.loss_types, trainer.loss_weights = ["sigmoid"], [1.0]
    trainer._compute_loss(trainer.model, batch, False).backward()
    grads = [p.grad for n, p in trainer.model.named_parameters() if "lora_A.default" in n]
    assert grads and all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)


def test_a_continued_adapter_is_trained_against_a_frozen_copy_of_itself(setup, tmp_path):
    """chaining = "continue": the reference is the SFT adapter as loaded (TRL's "ref" copy), not the model
    without it, which would be the pre-SFT model."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    path, tokenizer, examples = setup
    sft_adapter = get_peft_model(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                                 LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    _perturb(sft_adapter, scale=0.2)
    sft_adapter.save_pretrained(tmp_path / "sft_adapter")
    sft_model = sft_adapter.merge_and_unload()
    policy = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                                       str(tmp_path / "sft_adapter"), is_trainable=True)
    built, said = _trainer(tmp_path, policy, tokenizer, examples, "continue", tmp_path / "sft_adapter")
    trainer = built.trainer
    assert "ref" in trainer.model.peft_config and "a frozen copy of the continued adapter" in said[0]
    _perturb(trainer.model, "default", 0.05)  # training moves the continued adapter, not its copy
    batch = trainer.data_collator(examples[:2])
    reference, _ = trainer.reference_log_probs(batch)
    assert torch.allclose(reference, _full_logit_logps(sft_model, batch), atol=1e-4, rtol=1e-6)
    base = _full_logit_logps(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), batch)
    assert (reference - base).abs().max() > 1e-3  # control: the adapter disabled would be the pre-SFT model
