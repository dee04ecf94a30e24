"""Scoring multiple-choice questions on a loaded model: one forward pass per question, the next-token
logits at the prompt's last position only (``logits_to_keep=1``: the output layer runs on one position,
not the whole sequence), read at the choice letters' token ids. The prediction is the letter with the
highest logit among the question's own choices.

Prompts are left-padded into batches with position ids counted from each prompt's first real token,
so a padded prompt scores as it would alone (tests/test_benchmarks_scoring.py checks the letters'
logits against a full-logits forward of each prompt alone). Runs on whatever model the stage holds:
LoRA, QLoRA (4-bit base), several adapters.
"""

from __future__ import annotations

import contextlib

import torch

from recipes.benchmarks.prompts import CUE, letter_texts
from recipes.errors import TrainingError


def letter_token_ids(tokenizer, prompt: str, language: str, count: int) -> list[int]:
    """The token id of each answer letter as it follows ``prompt`` (which ends with the cue): the letter
    must be one token that does not merge with the cue, else scoring it would read the wrong position."""
    base = tokenizer(prompt, add_special_tokens=False).input_ids
    ids = []
    for text in letter_texts(language, count):
        whole = tokenizer(prompt + text, add_special_tokens=False).input_ids
        if len(whole) != len(base) + 1 or whole[:len(base)] != base:
            raise TrainingError(f"the tokenizer does not put the answer letter {text!r} after {CUE[language]!r} as "
                                "one token of its own, so its logit cannot be read at the prompt's last position; "
                                "set the benchmark's language to the other prompt (\"en\" or \"zh\")")
        ids.append(whole[-1])
    return ids


def letter_logits(model, tokenizer, prompts: list[str], letter_ids: list[int], batch_size: int,
                  max_length: int | None = None, autocast_dtype=None) -> tuple[torch.Tensor, int]:
    """(fp32 logits [prompts, letters] at each prompt's next token, how many prompts were cut on the
    left to ``max_length`` tokens)."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    columns = torch.tensor(letter_ids, device=device)
    out, cut = [], 0
    was_training = model.training
    # bitsandbytes repacks a 4-bit layer's weight in place for CPU inference on its first forward in
    # eval mode, and the repacked weight cannot train: the first stage trains after scoring the start
    repacking = [m for m in model.modules() if getattr(m, "support_avx512bf16_for_cpu", False)]
    for module in repacking:
        module.support_avx512bf16_for_cpu = False
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            encoded = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts[start:start + batch_size]]
            if max_length:
                cut += sum(len(ids) > max_length for ids in encoded)
                encoded = [ids[-max_length:] for ids in encoded]
            width = max(len(ids) for ids in encoded)
            input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
            mask = torch.zeros((len(encoded), width), dtype=torch.long)
            for row, ids in enumerate(encoded):
                input_ids[row, width - len(ids):] = torch.tensor(ids)
                mask[row, width - len(ids):] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
                        else contextlib.nullcontext())
            with torch.no_grad(), autocast:
                logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                               position_ids=positions.to(device), use_cache=False, logits_to_keep=1).logits
            out.append(logits[:, -1, :].index_select(-1, columns).float().cpu())
    finally:
        model.train(was_training)
        for module in repacking:
            module.support_avx512bf16_for_cpu = True
    return torch.cat(out), cut


def predictions(logits: torch.Tensor, choices: list[int]) -> list[int]:
    """The index of the highest logit among each question's own choices (the first ``choices[i]``)."""
    picked = []
    for row, count in zip(logits, choices):
        picked.append(int(torch.argmax(row[:count])))
    return picked
