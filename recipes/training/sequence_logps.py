"""Sequence log-probabilities without the full logits, for losses that compare whole answers (DPO,
KTO): the sum of log p(token) over each sequence's answer tokens, from the chunked loss path.

Why: a preference loss needs log p(answer | prompt) for the chosen and the rejected answer, on the
policy and on the reference. TRL computes them from the full logits: at Qwen's 151,936-token
vocabulary one 2,048-token sequence is 1.2 GB of fp32 logits, times two answers, times policy and
reference. Here the model runs its own forward with the output layer skipped (the chunked loss's
hook), and each sequence's answer positions go through the chunked linear + cross-entropy, whose sum
is minus the sequence's log-probability; its gradient flows back through the hidden states (and the
trained token rows) exactly as the chunked loss's does.
"""

from __future__ import annotations

import contextlib

import torch

from recipes.training.chunked_loss import _PRECISION, _hidden_states, linear_cross_entropy, output_layer


def sequence_log_probs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor,
                       chunk_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probabilities [batch], answer token counts [batch]) of each row of ``input_ids``: the sum
    over the positions where ``completion_mask`` is 1 of log p(token | the tokens before it), as
    ``selective_log_softmax(logits[:, :-1], input_ids[:, 1:])`` masked by ``completion_mask[:, 1:]``
    and summed (TRL's definition). Differentiable when gradients are enabled."""
    from recipes.training.token_rows import head_rows

    head = output_layer(model)
    hidden = _hidden_states(model, head, {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False})
    hidden, targets, keep = hidden[:, :-1], input_ids[:, 1:], completion_mask[:, 1:].bool()
    weight, bias, rows = head_rows(head)
    device_type, dtype, _ = _PRECISION.get()
    autocast = dtype is not None and weight.dtype == torch.float32
    sums = []
    with torch.autocast(device_type, dtype=dtype) if autocast else contextlib.nullcontext():
        for row in range(hidden.shape[0]):
            picked = keep[row]
            if not bool(picked.any()):
                sums.append(torch.zeros((), dtype=torch.float32, device=hidden.device))
                continue
            cross_entropy = linear_cross_entropy(hidden[row][picked].to(weight.dtype), weight, bias, targets[row][picked],
                                                 chunk_size, rows)
            sums.append(-cross_entropy)
    return torch.stack(sums), keep.sum(dim=1)
