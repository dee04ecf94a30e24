"""A stage's training and evaluation sets: records read through the format plugins, tokenized (or
taken from the on-disk cache), a held-out share split off (``val_size``), extra evaluation sets
(``eval_data``), and SFT examples packed (``packing``).

The tokenization cache lives in ``$RECIPES_CACHE/tokenized`` (default ``~/.cache/qwen-recipes``),
one file per key; the key covers everything that determines the tokens: the data files' contents,
formats and options, the tokenizer (its serialized vocabulary and merges) and chat template, the
stage kind, ``cutoff_len``, ``overlong_examples`` and the version of this code. Written whole or not
at all (a temporary file, then a rename): an error while reading data leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from recipes.data.tokenization import DataStats, pretrain_examples, read_records, sft_examples
from recipes.plugins.hookspecs import RECORDS_FOR_KIND
from recipes.errors import RecipeError
from recipes.hashing import digest, file_sha256

CACHE_VERSION = 1  # bump when tokenization changes what it produces


@dataclass
class StageData:
    train: list[dict]
    evals: dict = field(default_factory=dict)  # set name -> examples
    stats: DataStats = field(default_factory=DataStats)
    packing: object = None  # PackingStats, when packed
    cached: bool = False
    cache_key: str = ""


def prepare(stage, tokenizer, say) -> StageData:
    s = stage.settings
    kind = RECORDS_FOR_KIND[stage.kind]
    identity = tokenizer_identity(tokenizer)
    examples, stats, key, cached = tokenize_cached(stage.sources, kind, tokenizer, identity, s)
    say(f"data: {'tokenized earlier, from the cache' if cached else 'tokenized and cached'} ({key[:12]})")
    if not examples:
        raise RecipeError(f"stage {stage.name!r}: the data gave no training example "
                          f"({stats.records} records, {stats.dropped} dropped)")
    data = StageData(examples, {}, stats, None, cached, key)
    if s.val_size:
        data.train, data.evals["val"] = split(examples, s.val_size, s.seed, stage.name)
    for index, source in enumerate(stage.eval_sources):
        fmt, options, files = source
        name = Path(files[0]).stem if len(files) == 1 else f"eval{index}"
        data.evals[name], _, _, _ = tokenize_cached([source], fmt.yields, tokenizer, identity, s)
    if s.packing:
        from recipes.data.packing import pack_examples

        data.train, data.packing = pack_examples(data.train, s.cutoff_len)
        data.evals = {name: pack_examples(rows, s.cutoff_len)[0] for name, rows in data.evals.items()}
    return data


def tokenizer_identity(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256((text + (tokenizer.chat_template or "")).encode()).hexdigest()


def tokenize_cached(sources, kind: str, tokenizer, identity: str, s: dict):
    """(examples, stats, key, from_cache) for ``sources`` read as ``kind``."""
    key = digest({
        "version": CACHE_VERSION, "kind": kind, "tokenizer": identity, "cutoff_len": s.cutoff_len,
        "overlong": s.overlong_examples if kind == "conversations" else None,
        "sources": [{"format": fmt.name, "options": options.model_dump(mode="json"),
                     "files": [file_sha256(f) for f in files]} for fmt, options, files in sources],
    })
    path = cache_dir() / f"{key}.pkl"
    if path.is_file():
        try:
            with open(path, "rb") as handle:
                examples, stats = pickle.load(handle)
            return examples, DataStats(**stats), key, True
        except (OSError, pickle.UnpicklingError, EOFError, TypeError):
            path.unlink(missing_ok=True)  # unreadable: tokenize again
    stats = DataStats()
    records = read_records(sources)
    if kind == "documents":
        examples = pretrain_examples(records, tokenizer, s.cutoff_len, stats)
    else:
        examples = sft_examples(records, tokenizer, s.cutoff_len, stats, s.overlong_examples)
    _write(path, (examples, asdict(stats)))
    return examples, stats, key, False


def cache_dir() -> Path:
    from recipes.cache import cache_root

    return cache_root() / "tokenized"


def _write(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)  # a cache that cannot be written is only slower, never wrong


def split(examples: list[dict], val_size: float, seed: int, stage: str) -> tuple[list[dict], list[dict]]:
    """Hold out ``val_size`` (a share below 1, or a count) of the examples, chosen with the seed."""
    count = int(val_size) if val_size >= 1 else round(len(examples) * val_size)
    if not 0 < count < len(examples):
        raise RecipeError(f"stage {stage!r}: val_size {val_size:g} holds out {count} of {len(examples)} examples; "
                          "set it so that both the training and the evaluation set keep at least one")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])
