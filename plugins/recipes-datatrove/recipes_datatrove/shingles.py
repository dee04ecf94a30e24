"""How a document becomes the 5-grams its MinHash signature is taken over.

The text is mostly CJK (Chinese, Japanese and Korean characters make up more than 30% of its non-space
characters, the rule of the built-in near dedup, recipes-near-dedup): character 5-grams, since such
text has no spaces between words; otherwise: word 5-grams. datatrove first simplifies the text
(lower case, no punctuation, digits folded), so a copy that differs only there is still a copy. datatrove
itself maps Chinese to spaCy with jieba (its ``[multilingual]`` extra, hundreds of megabytes with
TensorFlow); its ``load_word_tokenizer`` also accepts a ``WordTokenizer`` instance, which is how this
one is given to ``MinhashDedupSignature``, with no segmenter and no model to download.
"""

from __future__ import annotations

import re

from datatrove.utils.word_tokenizers import WordTokenizer

# CJK unified ideographs (with extension A and the compatibility block), kana, hangul
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")
SPACE = re.compile(r"\s")
MOSTLY = 0.3


def cjk_share(text: str) -> float:
    """The share of the text's non-space characters that are CJK; 0.0 for a text without any."""
    letters = len(text) - len(SPACE.findall(text))
    return len(CJK.findall(text)) / letters if letters else 0.0


class ScriptAwareTokenizer(WordTokenizer):
    """Characters as the "words" of a mostly-CJK text, whitespace-separated words otherwise (``unit``
    "auto"; "chars" or "words" for every text). MinHash reads only ``word_tokenize``; the sentence
    methods are never called by the dedup steps."""

    def __init__(self, unit: str = "auto"):
        super().__init__(f"recipes-{unit}")
        self.unit = unit

    def word_tokenize(self, text: str) -> list[str]:
        if self.unit == "chars" or (self.unit == "auto" and cjk_share(text) > MOSTLY):
            return [char for char in text if not char.isspace()]
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        raise NotImplementedError("only word_tokenize is used, by MinHash")

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        raise NotImplementedError("only word_tokenize is used, by MinHash")
