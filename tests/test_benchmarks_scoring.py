"""Letter-logit scoring on the real tiny model and Qwen tokenizer: batched, left-padded prompts give
each prompt's next-token logits at the letters exactly as a full-logits forward of the prompt alone,
under a LoRA adapter too."""

from __future__ import annotations

import pytest
import torch

from recipes.benchmarks.layouts import Item
from recipes.benchmarks.prompts import CUE, completion_prompt
from recipes.benchmarks.scoring import letter_logits, letter_token_ids, predictions


def items() -> list[Item]:
    texts = ["蜜蜂有几条腿", "Which gas do plants take in for photosynthesis, most of all, during a sunny day?",
             "2+2", "城市养蜂通常以哪种蜂为主，因为它性情温顺、产卵力强"]
    return [Item("bees", f"bees/{n}", q, ("one", "two", "three", "four"), n % 4, "x") for n, q in enumerate(texts)]


@pytest.fixture(scope="module")
def lora_model(tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    return model.eval()


@pytest.mark.parametrize("language", ["en", "zh"])
def test_letter_logits_equal_a_full_logits_forward_of_each_prompt_alone(lora_model, tokenizer, language):
    shots = items()[:2]
    prompts = [completion_prompt(item, shots[:n % 3], language) for n, item in enumerate(items())]
    assert all(p.endswith(CUE[language]) for p in prompts)
    ids = letter_token_ids(tokenizer, prompts[0], language, 4)
    assert tokenizer.convert_ids_to_tokens(ids)[0] == ("ĠA" if language == "en" else "A")
    lengths = {len(tokenizer(p).input_ids) for p in prompts}
    assert len(lengths) == len(prompts)  # different lengths: the batch is padded
    scored, cut = letter_logits(lora_model, tokenizer, prompts, ids, batch_size=3)
    assert cut == 0 and scored.shape == (4, 4)
    with torch.no_grad():
        full = torch.stack([lora_model(input_ids=tokenizer(p, return_tensors="pt").input_ids).logits[0, -1, ids]
                            for p in prompts])
        earlier = torch.stack([lora_model(input_ids=tokenizer(p, return_tensors="pt").input_ids).logits[0, -2, ids]
                               for p in prompts])
    torch.testing.assert_close(scored, full, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(scored, earlier, atol=1e-3)  # control: another position's logits differ
    assert predictions(scored, [4, 4, 2, 4]) == [int(full[0].argmax()), int(full[1].argmax()),
                                                 int(full[2, :2].argmax()), int(full[3].argmax())]


def test_a_letter_that_merges_with_the_cue_is_refused(tokenizer):
    from recipes.errors import TrainingError

    with pytest.raises(TrainingError, match="one token of its own"):
        letter_token_ids(tokenizer, "Answer: N", "zh", 4)  # "N" + "A" is one token, "NA"
    assert len(letter_token_ids(tokenizer, "Answer: The", "zh", 4)) == 4  # control: "The" + "A" stay two
