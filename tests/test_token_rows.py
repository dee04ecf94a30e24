"""train_tokens: which rows train (the auto rule), their gradient through the chunked loss and the lean
forward against peft's own, and a QLoRA run with stacked stages that trains only those rows."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from conftest import write
from recipes.cli import main
from recipes.errors import RecipeError
from recipes.training.token_rows import decide, lean_forward
from test_qwen1 import widened_v1


@pytest.fixture(scope="module")
def tiny(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model), str(tiny_model)


def test_auto_decides_as_documented(tiny):
    model, tokenizer, path = tiny
    known = decide("auto", "sft", model, tokenizer, path)
    assert known.ids == () and "auto: the model knows ChatML" in known.why  # random rows look like the rest
    assert decide("auto", "pretrain", model, tokenizer, path).why == "auto: a pre-training stage"
    assert decide(False, "sft", model, tokenizer, path).ids == ()
    listed = decide(("<|im_end|>", "<|endoftext|>"), "pretrain", model, tokenizer, path)
    assert listed.ids == (151645, 151643) and listed.why == "as the recipe lists"
    with pytest.raises(RecipeError, match="train_tokens: 'honeybee' is not one token of the tokenizer"):
        decide(("honeybee",), "sft", model, tokenizer, path)

    template = tokenizer.chat_template
    try:
        tokenizer.chat_template = None
        base = decide("auto", "sft", model, tokenizer, path)
        assert base.ids == (151644, 151645) and "no chat template" in base.why
    finally:
        tokenizer.chat_template = template

    embedding = model.get_input_embeddings().weight
    saved = embedding.data[151644:151646].clone()
    try:
        with torch.no_grad():
            embedding[151644:151646] *= 0.1  # rows training never reached (weight decay shrinks them)
        untrained = decide("auto", "sft", model, tokenizer, path)
        assert untrained.ids == (151644, 151645)
        assert "their input embedding rows are untrained (norm 0.1" in untrained.why
    finally:
        with torch.no_grad():
            embedding[151644:151646] = saved


def _peft(path, indices, lean: bool):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    torch.manual_seed(0)  # the same LoRA A in every copy
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "down_proj"], task_type="CAUSAL_LM",
                                             trainable_token_indices=indices))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "trainable_tokens_delta" in name or "lora_B" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))  # rows and LoRA away from their start
    if lean:
        assert lean_forward(model) == 2
    return model


@pytest.mark.parametrize("tied", [False, True])
def test_rows_gradient_chunked_and_lean_equal_peft(tmp_path, tiny_model, tied):
    from qwen_recipes.convert import convert_qwen1
    from recipes.builtin.losses import standard_lm_loss
    from recipes.training.chunked_loss import chunked_lm_loss

    if tied:
        path, indices = tiny_model, [151644, 151645]
    else:
        path, indices = convert_qwen1(widened_v1(tmp_path / "v1"), tmp_path / "qwen2"), {
            "embed_tokens": [151644, 151645], "lm_head": [151644, 151645]}
    ids = torch.tensor([[151644, 872, 198, 33, 151645, 198, 151644, 77091, 198, 33, 151645, 198],
                        [151644, 872, 198, 34, 35, 151645, 198, 151644, 77091, 198, 36, 151645]])
    labels = ids.clone()
    labels[:, :7] = -100  # SFT: the answer and its <|im_end|> carry labels
    batch = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)}
    results = {}
    for name, lean, loss_fn in (("peft", False, standard_lm_loss), ("lean", True, standard_lm_loss),
                                ("chunked", True, lambda m, b: chunked_lm_loss(m, b, chunk_size=3))):
        model = _peft(path, indices, lean)
        loss = loss_fn(model, batch)
        loss.backward()
        results[name] = loss.item(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    reference_loss, reference = results["peft"]
    assert any("trainable_tokens_delta" in n and g.abs().max() > 0 for n, g in reference.items())
    for name in ("lean", "chunked"):
        loss, grads = results[name]
        assert abs(loss - reference_loss) < 1e-5
        for key, grad in reference.items():
            assert (grads[key] - grad).abs().max() < 1e-5, (name, key)


def test_qlora_stacked_sft_trains_only_the_listed_rows(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    source = widened_v1(tmp_path / "v1")
    write(tmp_path / "chat.jsonl", "".join(json.dumps({"messages": [
        {"role": "user", "content": f"Question {i} about bees?"},
        {"role": "assistant", "content": f"Answer {i}: bees make honey."}]}) + "\n" for i in range(8)))
    recipe = write(tmp_path / "q.toml", textwrap.dedent(f"""
        [model]
        path = "{source}"
        [quantization]
        backend = "bitsandbytes"
        bits = 4
        [defaults]
        max_steps = 2
        learning_rate = 1e-2
        per_device_train_batch_size = 2
        gradient_accumulation_steps = 1
        cutoff_len = 64
        [[stages]]
        name = "domain"
        kind = "pretrain"
        [[stages.data]]
        path = "bundled:domain_corpus.jsonl"
        format = "text"
        [[stages]]
        name = "sft"
        kind = "sft"
        chaining = "stack"
        train_tokens = ["<|im_end|>"]
        [[stages.data]]
        path = "chat.jsonl"
        format = "messages"
    """))
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(recipe), "-o", str(run_dir)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "(bitsandbytes backend)" in result.output
    assert "train_tokens: the embedding and output rows of <|im_end|> (151645) train (as the recipe lists)" in result.output
    stages = run_dir / "stages"
    before = load_file(stages / "domain" / "merged" / "model.safetensors")
    after = load_file(stages / "sft" / "merged" / "model.safetensors")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert (after[name] != before[name]).any(dim=1).nonzero().flatten().tolist() == [151645], name

    exported = tmp_path / "exported"
    result = CliRunner().invoke(main, ["export", str(run_dir), "--to", str(exported)])
    assert result.exit_code == 0, result.output
    published = AutoModelForCausalLM.from_pretrained(exported).eval()
    model = AutoModelForCausalLM.from_pretrained(stages / "domain" / "merged")
    rebuilt = PeftModel.from_pretrained(model, str(stages / "sft" / "adapter")).eval()
    ids = torch.tensor([[151644, 872, 198, 33, 151645, 198]])
    with torch.no_grad():
        assert (rebuilt(input_ids=ids).logits - published(input_ids=ids).logits).abs().max() < 1e-4
