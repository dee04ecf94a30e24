"""SFT packing: several tokenized examples share one row of at most ``cutoff_len`` tokens, exactly.

Padding each SFT example to the longest in its batch wastes most of the compute on short chat turns;
packing fills those slots. It must not change what is learned: each example sees only itself. We use
transformers' own mechanism (``masking_utils.find_packed_sequence_indices``, transformers 5): when a
batch has ``position_ids`` and *no* ``attention_mask``, a restart of the positions marks a new
sequence, and the causal mask becomes block-diagonal for sdpa and eager attention (flash attention
reads the same positions). So a packed row carries positions that restart at 0 for each example, and
the collator sends no attention mask. Rows are padded with a final pad segment whose positions also
restart, so real tokens never attend to padding.

One more detail keeps packed = unpacked: the first label of each example is set to -100. Unpacked,
nothing predicts an example's first token; packed, the previous example's last token would.

The packer is best-fit decreasing (the longest example first, into the fullest row it fits in), a
greedy bin packing that fills rows to within a few percent. No torch here except in the collator.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from recipes.data.tokenization import IGNORE_INDEX

FLASH_ATTENTION = "flash_attention_2"
# the hub kernels transformers loads for flash attention (through the `kernels` package) when flash-attn
# itself is not installed: the same varlen entry point (_flash_attention_forward), the same kwargs
FLASH_KERNEL_PREFIX = "kernels-community/flash-attn"


def takes_varlen(attention: str | None) -> bool:
    """Whether an attention implementation is flash attention, which takes flattened varlen rows."""
    return attention == FLASH_ATTENTION or str(attention or "").startswith(FLASH_KERNEL_PREFIX)


# attention implementations on which position-id packing gives block-diagonal attention: sdpa and eager
# tested here (tests/test_packing.py); flash_attention_2 (and the kernels-community/flash-attn* hub
# kernels transformers may load in its place) through recipes.data.collate's flattened rows (varlen),
# not run here (no GPU)
PACKED_ATTENTION = ("sdpa", "eager", "flash_attention_2")


def check_packable(model) -> None:
    """Refuse a model on which packed rows would attend across examples.

    transformers looks for packed sequences only when there is no cache: with ``use_cache`` on, a
    forward pass builds one and the positions are ignored (measured: logits change by whole units).
    And only sdpa and eager attention are tested here."""
    from recipes.errors import RecipeError

    config = getattr(model, "config", None)
    if getattr(config, "use_cache", False):
        raise RecipeError("packing needs model.config.use_cache = False (with a cache, transformers does not "
                          "separate packed examples)")

    attention = getattr(config, "_attn_implementation", None)
    if attention not in PACKED_ATTENTION and not takes_varlen(attention):
        raise RecipeError(f"packing is verified with attention {', '.join(PACKED_ATTENTION)}; this model uses "
                          f"attention {attention!r}: load it with attn_implementation=\"sdpa\" or turn packing off")


@dataclass
class PackingStats:
    """How well the rows are filled: ``tokens`` real tokens in ``rows`` rows of ``cutoff_len`` slots."""

    examples: int
    rows: int
    tokens: int
    cutoff_len: int

    @property
    def efficiency(self) -> float:
        """Real tokens per token slot (rows x cutoff_len): 1.0 is a perfect fill."""
        return self.tokens / (self.rows * self.cutoff_len) if self.rows else 0.0

    def describe(self) -> str:
        return (f"packing: {self.examples} examples -> {self.rows} rows of {self.cutoff_len} tokens, "
                f"{self.efficiency:.1%} of token slots used")


def pack_examples(examples: list[dict], cutoff_len: int) -> tuple[list[dict], PackingStats]:
    """Pack ``{"input_ids", "labels"}`` examples (each at most ``cutoff_len`` long: ``sft_examples``
    truncates) into rows ``{"input_ids", "labels", "position_ids"}`` of at most ``cutoff_len`` tokens.

    Deterministic: equal lengths keep their input order, rows are returned in the order they were opened."""
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i]["input_ids"]), i))
    rows: list[list[int]] = []  # example indices per row
    free: list[tuple[int, int]] = []  # (room left, row index), sorted: best fit is the first with enough room
    for i in order:
        length = len(examples[i]["input_ids"])
        if not 0 < length <= cutoff_len:
            raise ValueError(f"example {i} has {length} tokens; packing needs 1 to cutoff_len={cutoff_len}")
        slot = bisect.bisect_left(free, (length, -1))
        if slot < len(free):
            room, row = free.pop(slot)
        else:
            room, row = cutoff_len, len(rows)
            rows.append([])
        rows[row].append(i)
        if room - length > 0:
            bisect.insort(free, (room - length, row))
    packed = [_row([examples[i] for i in members]) for members in rows]
    tokens = sum(len(e["input_ids"]) for e in examples)
    return packed, PackingStats(len(examples), len(packed), tokens, cutoff_len)


def _row(members: list[dict]) -> dict:
    ids, labels, positions = [], [], []
    for example in members:
        n = len(example["input_ids"])
        ids += example["input_ids"]
        labels += [IGNORE_INDEX] + list(example["labels"][1:])
        positions += range(n)
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


@dataclass
class PackedCollator:
    """Batches packed rows: pads each to the longest row with ``pad_id`` and -100 labels, the padding
    numbered as a sequence of its own; returns ``position_ids`` and deliberately no ``attention_mask``
    (with one, transformers would not look for packed sequences and attention would cross examples)."""

    pad_id: int

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        width = max(len(row["input_ids"]) for row in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        positions = torch.arange(width, dtype=torch.long).repeat(len(rows), 1)
        sources = torch.zeros((len(rows), width), dtype=torch.long) if rows[0].get("sources") else None
        for index, row in enumerate(rows):
            n = len(row["input_ids"])
            ids[index, :n] = torch.tensor(row["input_ids"])
            labels[index, :n] = torch.tensor(row["labels"])
            positions[index, :n] = torch.tensor(row["position_ids"])
            positions[index, n:] = torch.arange(width - n)
            if sources is not None:  # each token's source (a stage with several); padding has no label
                sources[index, :n] = torch.tensor(row["sources"])
        batch = {"input_ids": ids, "labels": labels, "position_ids": positions}
        if sources is not None:
            batch["sources"] = sources
        return batch
