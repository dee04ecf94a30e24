"""Packed rows as the attention kernel wants them (``packed_collator``).

Flash attention (``flash_attention_2``, or a ``kernels-community/flash-attn*`` hub kernel that
transformers puts in its place) takes varlen boundaries and no mask: each micro-batch is flattened
into ONE row (``FlatteningCollator``), its attention linear in the number of sequences.

sdpa and eager get a dense block-diagonal mask built from the restarting ``position_ids``, of
``[rows, 1, T, T]`` for rows of ``T`` tokens. Flattened, ``T`` would be the whole micro-batch (``batch x
cutoff_len``) and the mask and attention quadratic in it; so for them the packed rows stay one per
sequence of the batch (``PackedCollator``, packing.py): ``batch`` blocks of ``cutoff_len²``.

``FlatteningCollator``, as transformers' ``DataCollatorWithFlattening`` does, lays the rows of a
micro-batch end to end in one ``[1, total]`` row with no padding at all:

- ``position_ids`` restart at 0 for every example, and there is no ``attention_mask``, so sdpa and
  eager get the same exact block mask as before (``masking_utils.find_packed_sequence_indices``);
- with ``flash_kwargs`` (for flash_attention_2) the boundaries are also given as ``cu_seq_lens_q``/
  ``cu_seq_lens_k`` (int32 cumulative lengths) and ``max_length_q``/``max_length_k``, the kwargs
  transformers 5.24's flash-attention path reads to run varlen without recomputing them;
- labels are kept as packed (each example's first label is already -100, packing._row), so the
  shifted loss never predicts across an example boundary, and the number of labels is unchanged.

The loss, its gradient and ``num_items_in_batch`` equal the padded batch's (tests/test_packing.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from recipes.data.packing import takes_varlen
from recipes.data.tokenization import IGNORE_INDEX

def model_attention(model) -> str | None:
    return getattr(getattr(model, "config", None), "_attn_implementation", None)


def packed_collator(model, pad_id: int):
    """The collator for packed rows on ``model``: flattened for flash attention, else one row per
    packed row of the batch (sdpa's and eager's masks are quadratic in a row's length)."""
    if takes_varlen(model_attention(model)):
        return FlatteningCollator(pad_id, flash_kwargs=True)
    from recipes.data.packing import PackedCollator

    return PackedCollator(pad_id)


@dataclass
class FlatteningCollator:
    """Packed rows ``{"input_ids", "labels", "position_ids"}`` -> one row ``[1, sum of lengths]``."""

    pad_id: int  # unused for flattening (no padding); kept so it replaces PackedCollator(pad_id)
    flash_kwargs: bool = False

    @classmethod
    def for_model(cls, model, pad_id: int) -> "FlatteningCollator":
        return cls(pad_id, flash_kwargs=takes_varlen(model_attention(model)))

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        ids, labels, positions, sources = [], [], [], []
        for row in rows:
            ids += row["input_ids"]
            labels += row["labels"]
            positions += row.get("position_ids") or range(len(row["input_ids"]))
            sources += row.get("sources", ())
        batch = {"input_ids": torch.tensor([ids], dtype=torch.long),
                 "labels": torch.tensor([labels], dtype=torch.long),
                 "position_ids": torch.tensor([positions], dtype=torch.long)}
        if sources:  # each token's source (a stage with several)
            batch["sources"] = torch.tensor([sources], dtype=torch.long)
        if labels and labels[0] != IGNORE_INDEX:  # a row that does not start an example: not ours
            raise ValueError("FlatteningCollator: each row must start an example (first label -100)")
        if self.flash_kwargs:
            starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
            lengths = [b - a for a, b in zip(starts, starts[1:])]
            cu = torch.tensor(starts, dtype=torch.int32)
            batch.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max(lengths), max_length_k=max(lengths))
        return batch
