"""Preference records -> token ids with labels on the answers only, a held-out share split off.

Each side of a pair (prompt + chosen, prompt + rejected) is rendered with the tokenizer's chat
template through recipes' own conversation tokenizer: the prompt's turns (earlier assistant turns
too) are marked untrained, the answer's trained, so the labels cover the answer's text and the turn
end, never the template's framing. Too long: the prompt keeps its last ``max_prompt_len`` tokens,
then the sequence its first ``cutoff_len``; a pair left without an answer token is dropped; both are
counted. In memory: preference sets are thousands to tens of thousands of pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recipes.api import IGNORE_INDEX, RecipeError, conversation_tokens, hold_out


@dataclass
class PreparedData:
    train: list
    evals: dict = field(default_factory=dict)  # set name -> examples
    stats: dict = field(default_factory=dict)
    lines: list = field(default_factory=list)


def side(tokenizer, prompt: list[dict], answer: list[dict], tools, where: str, cutoff_len: int,
         max_prompt_len: int) -> tuple[list[int], list[int], bool]:
    """(ids, labels, truncated) of the prompt followed by one answer."""
    messages = [{**m, "train": False} for m in prompt] + [{**m, "train": True} for m in answer]
    ids, labels = conversation_tokens(tokenizer, messages, tools, where)
    start = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
    truncated = False
    if start > max_prompt_len:  # the prompt keeps its end: the question right before the answer
        cut = start - max_prompt_len
        ids, labels, truncated = ids[cut:], labels[cut:], True
    if len(ids) > cutoff_len:
        ids, labels, truncated = ids[:cutoff_len], labels[:cutoff_len], True
    return ids, labels, truncated


def _split(ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids): the completion runs from the first labelled token to the last (the
    template's newline after the turn end is not part of it), as TRL's collators take them."""
    trained = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    if not trained:
        return ids, []
    return ids[:trained[0]], ids[trained[0]:trained[-1] + 1]


def tokenize_pairs(records, tokenizer, cutoff_len: int, max_prompt_len: int) -> tuple[list[dict], dict]:
    """DPO examples as TRL's preference collator takes them, ``{"prompt_ids", "chosen_ids",
    "rejected_ids"}``, and counts."""
    examples, stats = [], {"records": 0, "tokens": 0, "label_tokens": 0, "truncated": 0, "dropped": 0}
    for record in records:
        stats["records"] += 1
        where = record.get("_where", "a record")
        parts, cut = {}, False
        for name in ("chosen", "rejected"):
            ids, labels, truncated = side(tokenizer, record["prompt"], record[name], record.get("tools"),
                                          f"{where} ({name})", cutoff_len, max_prompt_len)
            parts[name] = _split(ids, labels)
            cut = cut or truncated
        stats["truncated"] += cut
        (prompt, chosen), (other_prompt, rejected) = parts["chosen"], parts["rejected"]
        if not chosen or not rejected:
            stats["dropped"] += 1
            continue
        if prompt != other_prompt:
            raise RecipeError(f"{where}: the prompt tokenizes differently before the chosen and the rejected answer "
                              "(the chat template renders them apart); check the pair's turns")
        if chosen == rejected:
            raise RecipeError(f"{where}: the chosen and the rejected answer tokenize the same (after truncation to "
                              f"cutoff_len {cutoff_len}); raise cutoff_len or fix the pair")
        stats["tokens"] += 2 * len(prompt) + len(chosen) + len(rejected)
        stats["label_tokens"] += len(chosen) + len(rejected)
        examples.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    return examples, stats


def tokenize_unpaired(records, tokenizer, cutoff_len: int, max_prompt_len: int) -> tuple[list[dict], dict]:
    """KTO examples as TRL's unpaired collator takes them, ``{"prompt_ids", "completion_ids", "label"}``,
    and counts (desirable and undesirable among them)."""
    examples = []
    stats = {"records": 0, "tokens": 0, "label_tokens": 0, "truncated": 0, "dropped": 0, "desirable": 0,
             "undesirable": 0}
    for record in records:
        stats["records"] += 1
        ids, labels, truncated = side(tokenizer, record["prompt"], record["completion"], record.get("tools"),
                                      record.get("_where", "a record"), cutoff_len, max_prompt_len)
        stats["truncated"] += truncated
        prompt, completion = _split(ids, labels)
        if not completion:
            stats["dropped"] += 1
            continue
        stats["tokens"] += len(prompt) + len(completion)
        stats["label_tokens"] += len(completion)
        stats["desirable" if record["label"] else "undesirable"] += 1
        examples.append({"prompt_ids": prompt, "completion_ids": completion, "label": bool(record["label"])})
    return examples, stats


def prepare(context, tokenize, what: str) -> PreparedData:
    """A stage's examples (``tokenize``: pairs or unpaired), split, with the lines the run log shows."""
    s = context.settings
    max_prompt_len = context.options.max_prompt_len or s.cutoff_len // 2
    examples, stats = tokenize(context.records(), context.tokenizer, s.cutoff_len, max_prompt_len)
    if not examples:
        raise RecipeError(f"stage {context.stage_name!r}: the data gave no {what} ({stats['records']} records, "
                          f"{stats['dropped']} dropped for having no answer token left within cutoff_len)")
    train, held = hold_out(examples, s.val_size, s.seed, context.stage_name) if s.val_size else (examples, [])
    stats["examples"], stats["held_out"] = len(train), len(held)
    line = (f"{stats['records']} records -> {len(train)} {what} to train on, {len(held)} held out; "
            f"{stats['tokens']:,} tokens, {stats['label_tokens']:,} with a label"
            + (f"; {stats['truncated']} truncated (prompt to {max_prompt_len}, sequence to {s.cutoff_len})"
               if stats["truncated"] else "") + (f"; {stats['dropped']} dropped" if stats["dropped"] else ""))
    return PreparedData(train, {"val": held} if held else {}, stats, [line])
