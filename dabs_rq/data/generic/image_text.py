"""Generic image-text reader: image files paired with a text (a caption, a question and answer).

Minimal YAML (a JSONL file, one pair a line: ``{"image": "imgs/1.jpg", "text": "a red car"}``;
seeded 80/20 split over the lines; a word vocabulary built from the train lines)::

    reader:
      _target_: dabs_rq.data.generic.image_text.image_text_pairs
      table: pairs.jsonl           # or .csv / .tsv / .json / .parquet
      label_type: none             # pretraining; or label_column: <column> for a task
      image_size: [64, 64]
      seq_len: 32
      vocab_size: 5000
    inputs:
      - {_target_: dabs_rq.encoder.PatchEmbedding2d, image_size: [64, 64], patch_size: [8, 8], channels: 3}
      - {_target_: dabs_rq.encoder.TokenEmbedding, seq_len: 32, vocab_size: 5000}

Items are ``((float32 [channels, H, W] in [0, 1], int32 [seq_len] ids), label)``, the order of
the ``inputs`` list above (as in ``domains/vqa.yaml``). Images are read as by
:mod:`dabs_rq.data.generic.images` (resized to ``image_size``, stored once as uint8, an image
named by several rows decoded once); texts become ``[CLS] text [SEP]`` ids, or ``[CLS] text
[SEP] pair [SEP]`` with ``text_pair_column`` (a question and its answer), padded or cut to
``seq_len`` (:func:`dabs_rq.data.generic.tokens.encode_texts`).

Keys: ``table`` (or ``train`` and ``test`` tables with ``split_by: files``), ``images_root``
(default: the table's folder), ``image_column`` (default ``image``: a file path relative to
``images_root``, or absolute), ``text_column`` (default ``text``), ``text_pair_column``,
``tokenizer`` (``words``: the ``vocab_size`` most frequent words of the train rows, offline;
or a pretrained tokenizer's hub name or folder (relative to the YAML's folder, or absolute), whose size
``TokenEmbedding.vocab_size`` must then be), ``seq_len`` (must equal the ``TokenEmbedding``'s),
``vocab_size`` (at most the ``TokenEmbedding``'s), ``image_size``, ``channels`` and every split and label key of
:mod:`dabs_rq.data.generic.spec`
(``label_type`` none | class | multilabel | score; ``split_by`` ratio | column | files).
``split_by: ratio`` splits rows: give ``split_column`` to keep all rows of one image on one side.

A corrupt or truncated image file, or a row whose image file is missing or whose text (or
pair) is empty, raises :class:`~dabs_rq.data.storage.CorruptDataError` naming it; with
``on_corrupt: skip`` its rows are left out and counted, one summary line per split. An empty
label cell follows ``unlabelled`` (``error`` | ``skip``), and every split Dataset carries
``excluded``, as in :mod:`dabs_rq.data.generic.images`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import numpy as np

from dabs_rq.data.generic.images import TableImages, TableRows, cell_text
from dabs_rq.data.generic.spec import AtLeast, ReaderSpecError
from dabs_rq.data.generic.tokens import TokenizerPath, encode_texts
from dabs_rq.data.image_cache import ImageDataset


@dataclasses.dataclass
class ImageTextPairs(TokenizerPath, TableImages):
    PATH_FIELDS: ClassVar[tuple[str, ...]] = (*TableImages.PATH_FIELDS, "tokenizer")
    TARGET: ClassVar[str] = "dabs_rq.data.generic.image_text.image_text_pairs"
    PATH_KEY: ClassVar[str] = "image_column"
    KIND: ClassVar[str] = "image_text"

    image_column: str = "image"
    text_column: str = "text"
    text_pair_column: str | None = None
    tokenizer: str = "words"
    seq_len: int = 32
    vocab_size: int = 10000

    def check(self) -> None:
        shortest = 3 if self.text_pair_column else 2
        if self.seq_len < shortest:
            raise ReaderSpecError("seq_len", f"must be at least {shortest} ([CLS] ... [SEP]), got {self.seq_len}")
        if self.tokenizer == "words" and self.vocab_size <= 4:
            raise ReaderSpecError("vocab_size", f"must exceed 4 (the special tokens), got {self.vocab_size}")
        super().check()

    def expected_inputs(self) -> list[dict]:
        """``PatchEmbedding2d`` then ``TokenEmbedding`` settings: its table must hold every id of a words
        vocabulary (a pretrained tokenizer's size is checked when it is loaded)."""
        tokens: dict = {"seq_len": int(self.seq_len)}
        if self.tokenizer == "words":
            tokens["vocab_size"] = AtLeast(self.vocab_size)
        return [*super().expected_inputs(), tokens]

    def column_needs(self) -> list[tuple[str, str | None]]:
        return [*super().column_needs(), ("text_column", self.text_column), ("text_pair_column", self.text_pair_column)]

    def row_problem(self, rows: TableRows, i: int) -> str | None:
        """An empty text or pair is a corrupt row (it would be encoded as ``[CLS] [SEP]``, a blank input)."""
        for column in (self.text_column, self.text_pair_column):
            if column is not None and not cell_text(rows.table[column].iloc[i]):
                return f"empty or missing text in column {column!r}"
        return None

    def extra_inputs(self, rows: TableRows) -> list[np.ndarray]:
        """int32 [rows, seq_len] token ids of every row (a ``words`` vocabulary from the train rows only)."""
        table = rows.table
        pairs = [cell_text(v) for v in table[self.text_pair_column]] if self.text_pair_column else None
        texts = [cell_text(v) for v in table[self.text_column]]
        ids = encode_texts(texts, pairs, self.tokenizer, self.seq_len, self.vocab_size, rows.splits["train"].tolist())
        return [ids.numpy().astype(np.int32, copy=False)]


def image_text_pairs(split: str, cache_dir: Path, on_corrupt: str = "error", **settings) -> ImageDataset:
    """Dataset of one split: ``((float32 [C, H, W] in [0, 1], int32 [seq_len]), label)`` (see the module docstring)."""
    return ImageTextPairs.from_mapping(settings).load(split, Path(cache_dir), on_corrupt)
