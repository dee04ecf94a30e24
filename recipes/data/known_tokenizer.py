"""The tokenizer of pre-training data without importing transformers, once transformers has built it.

Importing transformers (it imports torch) and building Qwen's tokenizer through it costs about three
CPU-seconds, a quarter of the preparation of a 50 MB corpus, while tokenizing documents needs only the
Rust tokenizer. It cannot be read from the model's ``tokenizer.json`` as is: transformers builds the
tokenizer its class describes from the file's vocabulary and merges (Qwen2's sets ``ignore_merges``
differently from the file), so only transformers' own result gives today's ids. After transformers
has built a model's tokenizer for a preparation, its Rust tokenizer is kept, serialized, under
``$RECIPES_CACHE/tokenizers/``, with what a preparation of documents asks of the tokenizer (its
length, the digest of its serialization, chat template, end-of-text id). The entry is keyed by what
decides the tokenizer: the model folder's small files by content, ``trust_remote_code`` and the
versions of transformers and tokenizers. A later preparation of documents with the same key loads the
serialization with the ``tokenizers`` library alone: the same Rust tokenizer, so the same ids, and
the same store key.

One setting is changed on the way, where it provably changes no id: a BPE tokenizer whose merges
turn every word of its vocabulary into that word's own token is kept with ``ignore_merges`` (a word
the vocabulary holds is looked up whole instead of merged pair by pair: the same token, by that
check, for any text). Qwen's 151,643 words all pass; transformers builds Qwen2's tokenizer without
the setting, which costs the merge loop on nearly every word (a third more CPU per token).

Conversations still load the tokenizer through transformers (its chat template renders them).
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

from recipes.hashing import digest

ENTRY_VERSION = 1


class KnownTokenizer:
    """What a preparation of documents asks of a transformers tokenizer, over its Rust tokenizer."""

    is_fast = True

    def __init__(self, rust, meta: dict):
        self._tokenizer = self.backend_tokenizer = rust
        self.split_special_tokens = meta["split_special_tokens"]
        rust.encode_special_tokens = self.split_special_tokens
        self.chat_template = meta["chat_template"]
        self.eos_token_id = meta["eos_token_id"]
        self._length = meta["length"]
        self._recipes_serialization = (meta["length"], meta["serialization_sha256"])

    def __len__(self) -> int:
        return self._length

    def convert_tokens_to_ids(self, token: str):
        return self._tokenizer.token_to_id(token)

    def convert_ids_to_tokens(self, token_id: int):
        return self._tokenizer.id_to_token(token_id)


def _key(folder: Path, trust_remote_code: bool) -> str | None:
    from recipes.data.ready import model_identity

    model = model_identity(str(folder))
    if model is None:
        return None
    libraries = {}
    for name in ("transformers", "tokenizers"):
        try:
            libraries[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            return None
    return digest({"entry": ENTRY_VERSION, "model": model, "trust_remote_code": trust_remote_code,
                   "libraries": libraries})


def _folder() -> Path:
    from recipes.cache import cache_root

    return cache_root() / "tokenizers"


def known_tokenizer(folder: str, trust_remote_code: bool) -> KnownTokenizer | None:
    """The tokenizer transformers built earlier for the model in ``folder``, if kept; else None."""
    key = _key(Path(folder), trust_remote_code)
    if key is None:
        return None
    try:
        meta = json.loads((_folder() / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None
    from tokenizers import Tokenizer

    try:
        rust = Tokenizer.from_file(str(_folder() / f"{key}.tokenizer.json"))
    except Exception:  # a damaged or truncated file: transformers builds it again
        return None
    return KnownTokenizer(rust, meta)


def remember_tokenizer(folder: str, trust_remote_code: bool, tokenizer) -> None:
    """Keep ``tokenizer``'s Rust tokenizer for the next preparation of documents, when calling it
    directly gives transformers' ids (``recipes.data.batch_tokenize.backend``) and the tokenizer has
    a separator for documents."""
    from recipes.data.batch_tokenize import backend
    from recipes.data.tokenization import document_separator
    from recipes.errors import RecipeError

    rust = backend(tokenizer)
    key = _key(Path(folder), trust_remote_code)
    if rust is None or key is None:
        return
    try:
        document_separator(tokenizer)
    except RecipeError:
        return
    text = rust.to_str()
    sha = hashlib.sha256(text.encode()).hexdigest()
    tokenizer._recipes_serialization = (len(tokenizer), sha)  # tokenizer_identity need not serialize again
    whole_words = merges_reproduce_vocab(rust)
    if whole_words:
        from tokenizers import Tokenizer

        kept = Tokenizer.from_str(text)
        kept.model.ignore_merges = True
        text = kept.to_str()
    meta = {"length": len(tokenizer), "serialization_sha256": sha, "chat_template": tokenizer.chat_template,
            "eos_token_id": tokenizer.eos_token_id, "split_special_tokens": rust.encode_special_tokens,
            "ignore_merges_set": whole_words}
    target = _folder()
    target.mkdir(parents=True, exist_ok=True)
    for name, content in ((f"{key}.tokenizer.json", text), (f"{key}.json", json.dumps(meta))):  # meta last
        temporary = target / f".{name}.{os.getpid()}"
        temporary.write_text(content)
        os.replace(temporary, target / name)


def merges_reproduce_vocab(rust) -> bool:
    """Whether ``rust`` is a BPE tokenizer without ``ignore_merges`` (nor dropout, which makes merging
    random) whose merges turn every word of its vocabulary into that word's own token: then looking
    a whole word up first gives the same tokens for every word, so for every text."""
    model = rust.model
    if type(model).__name__ != "BPE" or model.ignore_merges or model.dropout:
        return False
    for word, token in rust.get_vocab(with_added_tokens=False).items():
        pieces = model.tokenize(word)
        if len(pieces) != 1 or pieces[0].id != token:
            return False
    return True
