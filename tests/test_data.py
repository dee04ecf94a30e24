"""Tokens and labels, checked against real Qwen token ids."""

from __future__ import annotations

from recipes.data.tokenization import IGNORE_INDEX, DataStats, PadCollator, pretrain_examples, render_conversation, sft_examples

IM_START, IM_END, ENDOFTEXT = 151644, 151645, 151643


def test_genuine_qwen_ids(tokenizer):
    assert tokenizer("你好 world", add_special_tokens=False).input_ids == [108386, 1879]
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [
        ENDOFTEXT, IM_START, IM_END]


def test_sft_labels_are_exactly_assistant_tokens_and_im_end(tokenizer):
    messages = [
        {"role": "system", "content": "You keep bees."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi there"},
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "你好！"},
    ]
    [example] = sft_examples([{"messages": messages}], tokenizer, 1024, DataStats())
    ids, labels = example["input_ids"], example["labels"]
    # the whole sequence is the chat template's rendering, tokenized
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert ids == tokenizer(text, add_special_tokens=False).input_ids
    assert text.startswith("<|im_start|>system\nYou keep bees.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n")
    hi_there = tokenizer("Hi there", add_special_tokens=False).input_ids
    nihao = tokenizer("你好！", add_special_tokens=False).input_ids
    learned = [label for label in labels if label != IGNORE_INDEX]
    assert learned == hi_there + [IM_END] + nihao + [IM_END]
    # and they sit where those tokens are, right after "<|im_start|>assistant\n"
    assistant_header = [IM_START] + tokenizer("assistant\n", add_special_tokens=False).input_ids
    start = next(i for i in range(len(ids)) if ids[i:i + len(assistant_header)] == assistant_header)
    first = start + len(assistant_header)
    assert labels[first - 1] == IGNORE_INDEX
    assert labels[first:first + len(hi_there) + 1] == hi_there + [IM_END]
    assert labels[first + len(hi_there) + 1] == IGNORE_INDEX  # the "\n" after <|im_end|>


def test_default_system_prompt_comes_from_the_template(tokenizer):
    text, spans = render_conversation(tokenizer, [{"role": "user", "content": "Q"},
                                                  {"role": "assistant", "content": "A"}])
    assert text.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    assert [text[s:e] for s, e in spans] == ["A<|im_end|>"]


def test_truncated_conversation_without_labels_is_dropped(tokenizer):
    long_prompt = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]
    stats = DataStats()
    assert sft_examples([{"messages": long_prompt}], tokenizer, 64, stats) == []
    assert (stats.truncated, stats.dropped) == (1, 1)


def test_pretrain_joins_documents_with_endoftext_and_keeps_the_tail(tokenizer):
    docs = [{"text": "Bees make honey."}, {"text": "蜜蜂酿蜜。"}, {"text": "Varroa mites harm hives."}]
    stats = DataStats()
    examples = pretrain_examples(docs, tokenizer, 8, stats)
    stream = [t for e in examples for t in e["input_ids"]]
    expected = []
    for doc in docs:
        expected += tokenizer(doc["text"], add_special_tokens=False).input_ids + [ENDOFTEXT]
    assert stream == expected
    assert all(len(e["input_ids"]) == 8 for e in examples[:-1]) and 0 < len(examples[-1]["input_ids"]) <= 8
    assert all(e["labels"] == e["input_ids"] for e in examples)
    assert stats.tokens == len(expected)


def test_collator_pads_with_ignored_labels():
    batch = PadCollator(pad_id=ENDOFTEXT)([{"input_ids": [1, 2, 3], "labels": [1, 2, 3]},
                                           {"input_ids": [4], "labels": [IGNORE_INDEX]}])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, ENDOFTEXT, ENDOFTEXT]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[1, 2, 3], [IGNORE_INDEX] * 3]


def test_slow_path_places_the_same_labels(tokenizer):
    """The piecewise path (for tokenizers without offsets, such as Qwen-7B v1's) agrees with offsets."""
    from recipes.data.tokenization import label_tokens

    messages = [{"role": "user", "content": "蜂王多大？"}, {"role": "assistant", "content": "About 2 cm, 约两厘米。"},
                {"role": "user", "content": "And workers?"}, {"role": "assistant", "content": "Smaller."}]
    text, spans = render_conversation(tokenizer, messages)
    fast = label_tokens(tokenizer, text, spans)

    class Slow:
        is_fast = False

        def __call__(self, text, add_special_tokens=False):
            return tokenizer(text, add_special_tokens=add_special_tokens)

    assert label_tokens(Slow(), text, spans) == fast
