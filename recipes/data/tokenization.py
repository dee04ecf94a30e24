"""A stage's data: read records through the format plugins, then tokens and labels.

- Pre-training: documents joined with ``<|endoftext|>`` and cut into ``cutoff_len`` blocks; every
  token is a label. The last, shorter block is kept (no token is dropped).
- SFT: each conversation rendered with the tokenizer's own chat template (Qwen's ChatML), so that
  training and inference see the same text; labels on the messages marked trained (by default the
  assistant turns: their text and the ``<|im_end|>`` that closes them; see recipes.data.conversations). Conversations longer than ``cutoff_len`` are truncated; one left
  with no label is dropped, and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from recipes.data.conversations import message_units, unit_trained
from recipes.errors import RecipeError

IGNORE_INDEX = -100


@dataclass
class DataStats:
    records: int = 0
    examples: int = 0
    tokens: int = 0
    label_tokens: int = 0
    truncated: int = 0
    dropped: int = 0
    notes: list = field(default_factory=list)
    bad: int = 0  # records skipped as malformed (on_bad_record = "skip")
    bad_first: list = field(default_factory=list)  # where the first of them were, and why
    removed: dict = field(default_factory=dict)  # per training source: what cleaning removed, per reason


def read_records(sources) -> list[dict]:
    """``sources``: (DataFormat, options instance, [files]) triples, in recipe order."""
    records = []
    for fmt, options, files in sources:
        for path in files:
            records.extend(fmt.read(Path(path), options))
    return records


def special_id(tokenizer, token: str) -> int | None:
    """The id of ``token`` in this tokenizer's vocabulary, or None (never the unknown token's id)."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if isinstance(token_id, int) and tokenizer.convert_ids_to_tokens(token_id) == token:
        return token_id
    return None


def document_separator(tokenizer) -> int:
    """The token between pre-training documents: the family's end-of-text, else the tokenizer's eos."""
    from recipes.family import family

    end_of_text = family().end_of_text
    separator = special_id(tokenizer, end_of_text)
    if separator is None:
        separator = tokenizer.eos_token_id
    if separator is None:
        raise RecipeError(f"the tokenizer has neither {end_of_text} nor an eos token to separate documents")
    return separator


def pretrain_examples(records: list[dict], tokenizer, cutoff_len: int, stats: DataStats) -> list[dict]:
    separator = document_separator(tokenizer)
    texts = [r["text"] for r in records]
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(separator)
    examples = []
    for start in range(0, len(stream), cutoff_len):
        block = stream[start:start + cutoff_len]
        examples.append({"input_ids": block, "labels": list(block)})
    stats.records, stats.examples = len(records), len(examples)
    stats.tokens = stats.label_tokens = len(stream)
    return examples


# which roles may follow which: an optional system message first, then user and assistant in turn;
# tool results follow an assistant turn (its tool calls, or in some data sets, such as LLaMA-Factory's
# glaive demo, a call written out in its text) and are answered by the assistant
_NEXT = {None: ("user",), "user": ("assistant",), "assistant": ("user", "tool"), "tool": ("tool", "assistant")}


def check_conversation(messages: list[dict], where: str) -> None:
    roles = [m["role"] for m in messages]
    first = 1 if roles[:1] == ["system"] else 0
    if first == len(roles):
        raise RecipeError(f"{where}: the conversation has no user or assistant message")
    previous = None
    for index in range(first, len(messages)):
        role = roles[index]
        if role not in _NEXT[previous]:
            after = f"after {previous}" if previous else "first"
            raise RecipeError(f"{where}: message {index} is {role!r} {after}; expected "
                              f"{' or '.join(map(repr, _NEXT[previous]))} (an optional system message, then user "
                              f"and assistant in turn, tool results after tool calls); roles: {roles}")
        previous = role
    if roles[-1] != "assistant":
        raise RecipeError(f"{where}: the conversation must end with an assistant message (nothing to learn)")


def render_conversation(tokenizer, messages: list[dict], tools: list[dict] | None = None,
                        where: str = "a record") -> tuple[str, list[tuple[int, int]]]:
    """The conversation as the chat template renders it (with ``tools`` when given), and the character
    spans that get labels.

    Each message owns the text its rendering adds to the rendering of the messages before it (so the
    spans come from the template itself, never from knowing its syntax). A trained message (see
    ``recipes.data.conversations.message_trained``) is labelled over that text, except that an assistant
    turn after an untrained message starts after the generation prompt (``<|im_start|>assistant\n``),
    and a trained stretch ends at the turn terminator, not the newline after it. By default that is
    each assistant message's text plus its ``<|im_end|>``; with every message trained, every token.
    Consecutive tool results are one unit (``message_units``); an assistant message's
    ``context_prefix`` (its untrained ``<think>`` block) is skipped after the generation prompt."""
    def render(upto: int, generation: bool = False) -> str:
        return tokenizer.apply_chat_template(messages[:upto], tools=tools, tokenize=False,
                                             add_generation_prompt=generation)

    from recipes.family import family

    turn_end = family().turn_end
    units = message_units(messages)  # a run of tool results renders as one unit (issue 16)
    renders = [""] + [render(end) for _, end in units]
    for before, after in zip(renders, renders[1:]):
        _check_prefix(before, after)
    trained = [unit_trained(messages[first:end], where) for first, end in units]
    spans = []
    for index, (first, _) in enumerate(units):
        if not trained[index]:
            continue
        message = messages[first]
        start, end = len(renders[index]), len(renders[index + 1])
        if message["role"] == "assistant" and (index == 0 or not trained[index - 1]):
            prompt = render(first, generation=True)
            _check_prefix(prompt, renders[index + 1])
            start = len(prompt) + _context_prefix(message, renders[index + 1], len(prompt))
        if index + 1 == len(units) or not trained[index + 1]:
            text = renders[index + 1]
            terminator = text.rfind(turn_end, start, end)
            end = terminator + len(turn_end) if terminator >= 0 else start + len(text[start:end].rstrip())
        if spans and spans[-1][1] == start:
            start = spans.pop()[0]
        spans.append((start, end))
    return renders[-1], spans


def _context_prefix(message: dict, text: str, start: int) -> int:
    """How many characters at ``start`` are the message's untrained ``context_prefix`` (0 if none)."""
    prefix = message.get("context_prefix")
    if not prefix:
        return 0
    if not text.startswith(prefix, start):
        raise RecipeError("the tokenizer's chat template does not render an assistant turn's reasoning where its "
                          "content starts; set the format option train_on_reasoning = true")
    return len(prefix)


def _check_prefix(prefix: str, text: str) -> None:
    if not text.startswith(prefix):
        raise RecipeError("the tokenizer's chat template renders a conversation differently from its "
                          "prefix; labels cannot be placed. Use a template whose turns append (ChatML)")


def label_tokens(tokenizer, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Token ids of ``text`` and their labels: the id inside a span to learn, else -100.

    A fast tokenizer tokenizes the whole text once and places labels by character offsets. A slow
    one (Qwen-7B v1's own tokenizer has no offsets) tokenizes the pieces between span edges; those
    edges sit at ChatML's special tokens and newlines, where BPE merges do not cross."""
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
        labels = [token if end > start and any(s <= start and end <= e for s, e in spans) else IGNORE_INDEX
                  for token, (start, end) in zip(ids, offsets)]
        return ids, labels
    ids, labels, cursor = [], [], 0
    for start, end in spans:
        for piece, learn in ((text[cursor:start], False), (text[start:end], True)):
            piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"] if piece else []
            ids += piece_ids
            labels += piece_ids if learn else [IGNORE_INDEX] * len(piece_ids)
        cursor = end
    tail = tokenizer(text[cursor:], add_special_tokens=False)["input_ids"] if text[cursor:] else []
    return ids + tail, labels + [IGNORE_INDEX] * len(tail)


def conversation_tokens(tokenizer, messages: list[dict], tools: list[dict] | None = None,
                        where: str = "a record") -> tuple[list[int], list[int]]:
    """(token ids, labels) of one conversation rendered with the tokenizer's chat template, labels on
    its trained messages (``"train": true``, else the assistant turns), as an SFT stage tokenizes it;
    an invalid conversation raises ``RecipeError`` naming ``where``."""
    check_conversation(messages, where)
    text, spans = render_conversation(tokenizer, messages, tools, where)
    return label_tokens(tokenizer, text, spans)


def sft_examples(records: list[dict], tokenizer, cutoff_len: int, stats: DataStats,
                 overlong: str = "truncate") -> list[dict]:
    """Tokens and labels per conversation. One longer than ``cutoff_len`` is truncated (``overlong =
    "truncate"``) or left out (``"drop"``); either way it is counted."""
    if not getattr(tokenizer, "chat_template", None):
        from recipes.family import family

        tokenizer.chat_template = family().chat_template()
        stats.notes.append(f"the tokenizer had no chat template: using {family().name}'s")
    examples = []
    for record in records:
        messages = record["messages"]
        check_conversation(messages, record.get("_where", "a record"))
        text, spans = render_conversation(tokenizer, messages, record.get("tools"), record.get("_where", "a record"))
        ids, labels = label_tokens(tokenizer, text, spans)
        if len(ids) > cutoff_len:
            if overlong == "drop":
                stats.dropped += 1
                continue
            ids, labels = ids[:cutoff_len], labels[:cutoff_len]
            stats.truncated += 1
        stats.tokens += len(ids)
        learned = sum(1 for label in labels if label != IGNORE_INDEX)
        if not learned:
            stats.dropped += 1
            continue
        stats.label_tokens += learned
        examples.append({"input_ids": ids, "labels": labels})
    stats.records, stats.examples = len(records), len(examples)
    return examples


@dataclass
class PadCollator:
    """Pads a batch to its longest example: pad id for inputs, 0 in the attention mask, -100 labels."""

    pad_id: int

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        width = max(len(example["input_ids"]) for example in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        tagged = "sources" in batch[0]  # each token's source (a stage with several; -1 on padding)
        sources = torch.full((len(batch), width), -1, dtype=torch.long) if tagged else None
        for row, example in enumerate(batch):
            n = len(example["input_ids"])
            ids[row, :n] = torch.tensor(example["input_ids"])
            labels[row, :n] = torch.tensor(example["labels"])
            mask[row, :n] = 1
            if tagged:
                sources[row, :n] = torch.tensor(example["sources"])
        out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        return {**out, "sources": sources} if tagged else out
