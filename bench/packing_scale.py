"""SFT packing time at scale: the store's linear best-fit packer (recipes.data.layout.pack_lengths)
against the in-memory pack_examples it replaces (at 50k only: it is super-linear), on log-normal
lengths (median about 150 tokens) at cutoff 1024.

    python bench/packing_scale.py
"""
import random, time
import numpy as np
from recipes.data.layout import pack_lengths
from recipes.data.packing import pack_examples
rng = random.Random(0)
for n in (50_000, 300_000, 1_000_000):
    lengths = np.asarray([min(1024, int(rng.lognormvariate(5, 0.8)) + 1) for _ in range(n)])
    t = time.perf_counter(); m, s = pack_lengths(lengths, 1024); new = time.perf_counter() - t
    line = f"{n:,} examples: linear packer {new:.2f} s, {len(s) - 1:,} rows, fill {lengths.sum() / ((len(s) - 1) * 1024):.1%}"
    if n == 50_000:
        t = time.perf_counter(); rows, st = pack_examples([{"input_ids": [0] * int(l), "labels": [0] * int(l)} for l in lengths], 1024); old = time.perf_counter() - t
        line += f"; pack_examples {old:.2f} s, {st.rows:,} rows"
    print(line, flush=True)
