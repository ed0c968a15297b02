"""Text to token ids for the generic readers: a word vocabulary built from the train split
(``tokenizer: words``, offline, any language with spaces) or a pretrained tokenizer by name or
folder (``tokenizer: bert-base-uncased``; see :mod:`dabs_rq.data.readers.tokenize`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from dabs_rq.data.generic.spec import ReaderSpecError
from dabs_rq.data.word_vocab import CLS, PAD, SEP, UNK, WordVocabulary, words

WORDS = "words"


class TokenizerPath:
    """Mixin for reader schemas with a ``tokenizer`` field: ``words``, a tokenizer name in the
    Hugging Face cache, or a folder (written by ``save_pretrained``) resolved like the other paths,
    against the YAML's folder. The schema lists ``tokenizer`` in its ``PATH_FIELDS``."""

    def _tokenizer_is_folder(self, base: Path | None = None) -> bool:
        value = str(self.tokenizer)
        if value == WORDS:
            return False
        if value.startswith(("/", ".", "~")) or Path(value).is_absolute():
            return True
        return base is not None and (base / value).expanduser().is_dir()

    def resolve_paths(self, base: Path) -> None:
        name = None if self._tokenizer_is_folder(base) else self.tokenizer
        super().resolve_paths(base)
        if name is not None:  # ``words`` or a hub name stays as written
            self.tokenizer = name

    def check(self) -> None:
        if not self.tokenizer:
            raise ReaderSpecError("tokenizer", "must be words or a pretrained tokenizer's name or folder")
        folder = self._tokenizer_is_folder()
        tokenizer = self.tokenizer
        if not folder:  # not a path: the base class must not look for it on disk
            self.tokenizer = None
        try:
            super().check()
        finally:
            self.tokenizer = tokenizer
        if folder and not Path(tokenizer).expanduser().is_dir():
            raise ReaderSpecError(
                "tokenizer",
                f"{tokenizer} is not a folder (give 'words', a folder written by "
                "save_pretrained, or a tokenizer name in the Hugging Face cache)",
            )


def encode_texts(
    texts: Sequence[str],
    pairs: Sequence[str] | None,
    tokenizer: str,
    seq_len: int,
    vocab_size: int,
    train_rows: Sequence[int],
) -> torch.Tensor:
    """[N, seq_len] int32 ids of every row (``[CLS] a [SEP] (b [SEP])``, padded/truncated).

    ``words``: the ``vocab_size`` most frequent words of the train rows (``train_rows``), so the
    test split never shapes the vocabulary. Otherwise ``tokenizer`` names a pretrained tokenizer
    (a folder saved with ``save_pretrained``, or a hub name already in the local cache); the
    YAML's ``TokenEmbedding.vocab_size`` must then be that tokenizer's size.
    """
    texts = ["" if t is None else str(t) for t in texts]
    pairs = None if pairs is None else ["" if t is None else str(t) for t in pairs]
    if tokenizer != "words":
        from dabs_rq.data.readers.tokenize import encode, load_tokenizer

        folder = Path(tokenizer).expanduser()
        tok = load_tokenizer(str(folder) if folder.is_dir() else tokenizer)
        return encode(tok, texts, pairs, max_length=seq_len)
    corpus = [texts[i] for i in train_rows] + ([pairs[i] for i in train_rows] if pairs is not None else [])
    vocab = WordVocabulary.build(corpus, vocab_size)
    if pairs is None:
        return vocab.encode(texts, seq_len)
    ids = torch.full((len(texts), seq_len), PAD, dtype=torch.int32)
    for row, (a, b) in enumerate(zip(texts, pairs)):
        first = [vocab.index.get(w, UNK) for w in words(a)]
        second = [vocab.index.get(w, UNK) for w in words(b)]
        while len(first) + len(second) > seq_len - 3:  # trim the longer one first, as tokenizers do
            (first if len(first) >= len(second) else second).pop()
        seq = [CLS, *first, SEP, *second, SEP]
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.int32)
    return ids
