"""The token store: a folder of memory-mapped numpy shards, data only (``.npy``, never pickle).

One folder per key (everything that decides the tokens) under ``$RECIPES_CACHE/store/``:

    shard-00000.ids.npy       uint32 token ids, the examples of the shard one after the other
    shard-00000.lengths.npy   int32, the length of each example (a document with its separator, or a
                              conversation)
    shard-00000.mask.npy      SFT: the label mask, one bit per token (numpy.packbits)
    shard-00000.json          counts; written last, so a shard with it is complete (a resumed
                              preparation keeps it)
    store.json                the whole store: shards, counts, bad records; written last (ready)
    layout-<hash>/            a stage's view: held-out split and packed rows, as index arrays

Pre-training needs 4 bytes a token (plus 4 a document); SFT 4.125 a token plus 4 an example. Every
process of a run maps the same files; nothing is read whole. The examples of pre-training are the
blocks of ``cutoff_len`` tokens cut from the stream of all shards (the last one shorter).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from recipes.data.tokenization import IGNORE_INDEX

STORE_VERSION = 3  # bump when what a shard holds changes (3: the digests and places of the kept documents)


def write_json(path: Path, value) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(value, indent=1))
    os.replace(temporary, path)


def _save(path: Path, array: np.ndarray) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
    np.save(temporary, array, allow_pickle=False)
    os.replace(temporary, path)


def write_shard(folder: Path, index: int, chunk) -> dict:
    """Write one chunk (``recipes.data.batch_tokenize.Chunk``) as shard ``index``; its counts."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"shard-{index:05d}"
    _save(Path(f"{stem}.ids.npy"), chunk.ids)
    _save(Path(f"{stem}.lengths.npy"), chunk.lengths)
    if chunk.mask is not None:
        _save(Path(f"{stem}.mask.npy"), np.packbits(chunk.mask))
    meta = {"index": index, "examples": int(len(chunk.lengths)), "tokens": int(len(chunk.ids)),
            "records": chunk.records, "label_tokens": chunk.label_tokens, "truncated": chunk.truncated,
            "dropped": chunk.dropped, "bad": chunk.bad}
    write_json(Path(f"{stem}.json"), meta)
    return meta


def finished_shard(folder: Path, index: int) -> dict | None:
    """The counts of shard ``index`` if an earlier preparation completed it."""
    try:
        return json.loads((folder / f"shard-{index:05d}.json").read_text())
    except (OSError, ValueError):
        return None


class TokenStore:
    """Read access to a ready store: ``example(i)`` -> (ids, labels) as int64 arrays. The shard files
    are mapped on first use (after a DataLoader worker forks, each maps its own)."""

    def __init__(self, folder: Path, cutoff_len: int):
        self.folder = Path(folder)
        self.info = json.loads((self.folder / "store.json").read_text())
        self.kind = self.info["kind"]
        self.cutoff_len = cutoff_len  # pre-training: the block length (the stream does not depend on it)
        shards = self.info["shards"]
        self._token_starts = np.cumsum([0] + [s["tokens"] for s in shards])
        self._example_starts = np.cumsum([0] + [s["examples"] for s in shards])
        self._maps: dict[int, tuple] = {}
        self.tokens = int(self._token_starts[-1])
        if self.kind == "documents":
            self.size = -(-self.tokens // self.cutoff_len)
        else:
            self.size = int(self._example_starts[-1])

    def __len__(self) -> int:
        return self.size

    def _shard(self, index: int) -> tuple:
        if index not in self._maps:
            stem = self.folder / f"shard-{index:05d}"
            ids = np.load(f"{stem}.ids.npy", mmap_mode="r", allow_pickle=False)
            lengths = np.load(f"{stem}.lengths.npy", mmap_mode="r", allow_pickle=False)
            mask = (np.load(f"{stem}.mask.npy", mmap_mode="r", allow_pickle=False) if self.kind == "conversations"
                    else None)
            starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]) if mask is not None else None
            self._maps[index] = (ids, mask, starts)
        return self._maps[index]

    def lengths(self) -> np.ndarray:
        """The length of every example, in order (int32; one small array, read once)."""
        if self.kind == "documents":
            out = np.full(self.size, self.cutoff_len, np.int32)
            if self.size:
                out[-1] = self.tokens - (self.size - 1) * self.cutoff_len
            return out
        return np.concatenate([np.load(self.folder / f"shard-{s['index']:05d}.lengths.npy", allow_pickle=False)
                               for s in self.info["shards"]] or [np.empty(0, np.int32)])

    def tokens_between(self, start: int, stop: int) -> np.ndarray:
        """The corpus stream's tokens [start, stop), across shard edges."""
        pieces = []
        shard = int(np.searchsorted(self._token_starts, start, side="right")) - 1
        while start < stop:
            ids = self._shard(shard)[0]
            offset = start - int(self._token_starts[shard])
            take = min(stop - start, len(ids) - offset)
            pieces.append(ids[offset:offset + take])
            start += take
            shard += 1
        return np.concatenate(pieces).astype(np.int64) if pieces else np.empty(0, np.int64)

    def example(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        if self.kind == "documents":
            start = index * self.cutoff_len
            ids = self.tokens_between(start, min(start + self.cutoff_len, self.tokens))
            return ids, ids.copy()
        shard = int(np.searchsorted(self._example_starts, index, side="right")) - 1
        ids, bits, starts = self._shard(shard)
        local = index - int(self._example_starts[shard])
        a, b = int(starts[local]), int(starts[local + 1])
        first, last = a // 8, (b + 7) // 8
        mask = np.unpackbits(bits[first:last])[a - first * 8: b - first * 8].astype(bool)
        tokens = np.asarray(ids[a:b], dtype=np.int64)
        return tokens, np.where(mask, tokens, IGNORE_INDEX)

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.folder.glob("shard-*.npy"))
