"""A word-level vocabulary built offline from a corpus (no tokenizer download needed).

DABS feeds only ``input_ids`` ([CLS] text [SEP], padded to a fixed length); this gives
the same interface for corpora that ship without a pretrained tokenizer.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import torch

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
PAD, UNK, CLS, SEP = range(len(SPECIALS))
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class WordVocabulary:
    """The ``size - 4`` most frequent words of a corpus (ties broken alphabetically) plus specials."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, corpus: Iterable[str], size: int) -> WordVocabulary:
        if size <= len(SPECIALS):
            raise ValueError(f"vocabulary size must exceed {len(SPECIALS)}, got {size}")
        counts = Counter(w for text in corpus for w in words(text))
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: size - len(SPECIALS)]
        return cls(list(SPECIALS) + [w for w, _ in ranked])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, texts: Sequence[str], seq_len: int) -> torch.Tensor:
        """[N, seq_len] ids: [CLS] words [SEP], truncated and padded with [PAD]."""
        ids = torch.full((len(texts), seq_len), PAD, dtype=torch.int32)
        for row, text in enumerate(texts):
            body = [self.index.get(w, UNK) for w in words(text)][: seq_len - 2]
            seq = [CLS, *body, SEP]
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.int32)
        return ids
