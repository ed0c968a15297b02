"""Generic text reader: sentences or sentence pairs in a table file, with a class, labels or a score.

Minimal YAML (a CSV beside the YAML with columns ``text`` and ``label``; seeded 80/20 split)::

    reader:
      _target_: dabs_rq.data.generic.text.text_table
      path: reviews.csv            # .csv / .tsv / .jsonl / .json / .parquet
      text_column: text
      label_column: label
      seq_len: 64
    inputs:
      - {_target_: dabs_rq.encoder.TokenEmbedding, seq_len: 64, vocab_size: 8192}

Items are ``((int32 [seq_len] token ids,), label)``: ``[CLS] text [SEP]`` (``text_column``,
default ``text``), or ``[CLS] text [SEP] pair [SEP]`` with ``text_pair_column``, padded with
``[PAD]`` and truncated (of a pair, the longer text first).

Labels (``label_type``): ``class`` (``label_column``: names or integers; class order
``classes``, else the distinct values sorted, numerically when every value is an integer),
``multilabel`` (``label_columns`` of 0/1, or one ``label_column`` of names separated by
``label_separator`` (default ``|``) or a JSON list), ``score`` (a number, for
``dabs_rq.tasks.RegressionTask``) or ``none`` (pretraining: label columns are not read, so a
pretraining YAML may point at another, unlabelled file). Splits (``split_by``): ``ratio``
(``test_fraction`` of the rows, seeded by ``split_seed``), ``column`` (``split_column`` equal
to ``train_value`` / ``test_value``) or ``files`` (``train`` and ``test`` tables). Rows are
split before corrupt ones are dropped, so skipping a row never moves another row between splits.

Tokens (``tokenizer``): ``words`` (default; offline, any language with spaces) keeps the
``vocab_size`` most frequent words of the *train* rows, so a word seen only in the test split
maps to ``[UNK]``; ``TokenEmbedding.vocab_size`` must be at least ``vocab_size`` (default
8192). A pretraining YAML and its transfer YAMLs must map a word to the same id: reading the
same file with the same split gives the same vocabulary (unless ``on_corrupt: skip`` drops
different rows); otherwise give every YAML of the domain the same ``vocab_from`` (a table, e.g. the pretraining corpus, whose every row's
``vocab_columns`` -- by default ``text_column`` and ``text_pair_column`` -- build the
vocabulary; never a file holding test rows). Any other value is a pretrained tokenizer: a
folder written by ``save_pretrained`` (relative to the YAML's folder) or a name in the local
Hugging Face cache; ``TokenEmbedding.vocab_size`` must then be at least the tokenizer's size
(``len(tokenizer)``) and ``reader.vocab_size`` is unused. The embedding's ``seq_len`` must
equal ``reader.seq_len`` (:meth:`TextTable.expected_inputs`); the vocabulary sizes are not
checked against the embedding.

Corrupt rows -- an empty or missing text, a missing or malformed label (a score that is no
number, a class not in ``classes``, a 0/1 column holding anything else) -- stop the run with a
:class:`~dabs_rq.data.storage.CorruptDataError` naming the file and the row (``row n`` counts
the file's records from 1, the CSV/TSV header not counted), or with ``on_corrupt: skip`` are
left out and counted in one summary line. A row with no label (an empty ``class`` or ``score``
cell, an empty 0/1 cell of ``label_columns``) is such a corrupt row under ``unlabelled: error``
(the default; its message names the key), and with ``unlabelled: skip`` is left out and counted
as unlabelled whatever ``on_corrupt`` says. An empty ``multilabel`` cell of names means "no
label applies" and is kept. Rows whose ``split_column`` is neither ``train_value`` nor
``test_value`` are in no split. Every split Dataset carries ``excluded`` (``{reason: count}``:
corrupt rows, unlabelled rows, rows in no split), which the record stores, and logs one line
when it is not empty.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from dabs_rq.data.generic.spec import AtLeast, ReaderSpec, ReaderSpecError, read_table
from dabs_rq.data.generic.tokens import WORDS, TokenizerPath, encode_texts
from dabs_rq.data.storage import CORRUPT, CorruptDataError, CorruptLog, LeftOut

_INTEGER = re.compile(r"[+-]?\d+")
#: ``excluded`` reasons
CORRUPT_ROWS = f"rows {CORRUPT}"
EMPTY_LABEL = "rows with an empty label"


class _NoLabel(ValueError):
    """A row without a label (``unlabelled`` decides), not a malformed one."""


_TRUE, _FALSE = ("1", "1.0", "true", "yes"), ("0", "0.0", "false", "no")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _cell(value: Any) -> str | None:
    """A scalar cell as text (``3.0`` read from a column with gaps -> ``"3"``); None if missing,
    not a scalar, or blank."""
    if _missing(value) or isinstance(value, (list, tuple, dict, np.ndarray)):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    elif isinstance(value, np.generic):
        value = value.item()
    text = str(value).strip()
    return text or None


def _read(path: str) -> Any:
    try:
        return read_table(path)
    except Exception as err:  # noqa: BLE001 - pandas/pyarrow raise many types for a broken file
        raise CorruptDataError(path, f"cannot read the table ({type(err).__name__}: {err})") from None


@dataclasses.dataclass
class TextTable(TokenizerPath, ReaderSpec):
    PATH_FIELDS: ClassVar[tuple[str, ...]] = ("path", "train", "test", "vocab_from", "tokenizer")
    TARGET: ClassVar[str] = "dabs_rq.data.generic.text.text_table"

    path: str | None = None
    train: str | None = None
    test: str | None = None
    text_column: str = "text"
    text_pair_column: str | None = None
    tokenizer: str = WORDS
    seq_len: int = 128
    vocab_size: int = 8192
    vocab_from: str | None = None
    vocab_columns: list[str] | None = None

    # ------------------------------------------------------------------ construction and checks

    def check(self) -> None:
        super().check()
        tokenizer = self.tokenizer
        minimum = 4 if self.text_pair_column else 3
        if self.seq_len < minimum:
            raise ReaderSpecError(
                "seq_len",
                f"must be at least {minimum} ([CLS] text [SEP]"
                f"{' pair [SEP]' if self.text_pair_column else ''}), got {self.seq_len}",
            )
        if tokenizer == WORDS and self.vocab_size <= 4:
            raise ReaderSpecError("vocab_size", f"must be more than 4 (the special tokens), got {self.vocab_size}")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ReaderSpecError("classes", f"names a class twice: {self.classes}")
        if self.split_by == "files":
            tables = [(key, self.require(key, "with split_by: files")) for key in ("train", "test")]
        else:
            tables = [
                (
                    "path",
                    self.require(
                        "path", "(a .csv/.tsv/.jsonl/.json/.parquet table; or split_by: files with train and test)"
                    ),
                )
            ]
        needs = [("text_column", self.text_column), ("text_pair_column", self.text_pair_column), *self.label_needs()]
        for key, table in tables:
            self.check_columns(table, self._columns(table, key), needs)
        if self.vocab_from is not None:
            if tokenizer != WORDS:
                raise ReaderSpecError("vocab_from", f"only applies to tokenizer: {WORDS}, not {tokenizer!r}")
            if self.test is not None and Path(self.vocab_from).resolve() == Path(self.test).resolve():
                raise ReaderSpecError("vocab_from", "is the test file: the test split must not shape the vocabulary")
            columns = self._columns(self.vocab_from, "vocab_from")
            self.check_columns(self.vocab_from, columns, [("vocab_columns", c) for c in self._vocab_columns()])
        elif self.vocab_columns is not None:
            raise ReaderSpecError("vocab_columns", "only applies with vocab_from")

    def expected_inputs(self) -> list[dict]:
        """One ``TokenEmbedding`` of ``seq_len`` tokens whose table holds every id the words
        vocabulary gives (a pretrained tokenizer's size is checked when it is loaded)."""
        inputs: dict = {"seq_len": self.seq_len}
        if self.tokenizer == "words":
            inputs["vocab_size"] = AtLeast(self.vocab_size)
        return [inputs]

    def _columns(self, table: str, key: str) -> list[str]:
        return self.table_header(key, table)

    def _vocab_columns(self) -> list[str]:
        return list(self.vocab_columns or [c for c in (self.text_column, self.text_pair_column) if c])

    # ------------------------------------------------------------------ reading

    def _table(self, path: str) -> dict[str, list]:
        """The columns this reader needs of the table ``path``, as lists of cells."""
        table = _read(path)
        needed = [self.text_column, self.text_pair_column, *[c for _, c in self.label_needs()]]
        missing = [c for c in needed if c is not None and c not in table.columns]
        if missing:
            raise CorruptDataError(path, f"no column {missing[0]!r} (columns: {', '.join(map(str, table.columns))})")
        return {column: table[column].tolist() for column in dict.fromkeys(c for c in needed if c is not None)}

    def _label(self, cells: dict[str, list], row: int) -> Any:
        """The row's label, checked (a ValueError says what is wrong): a class name, a float
        score, a list of 0/1 floats (``label_columns``) or a list of label names."""
        if self.label_type == "none":
            return None
        if self.label_type == "multilabel" and self.label_columns:
            values = []
            for column in self.label_columns:
                value = _cell(cells[column][row])
                if value is None:
                    raise _NoLabel(f"label column {column!r} is empty")
                if value.lower() not in _TRUE + _FALSE:
                    raise ValueError(f"label column {column!r} holds {cells[column][row]!r}, not 0 or 1")
                values.append(1.0 if value.lower() in _TRUE else 0.0)
            return values
        raw = cells[self.label_column][row]
        if self.label_type == "multilabel":
            if isinstance(raw, (list, tuple, np.ndarray)):  # a JSON list / parquet list of names
                names = [_cell(v) for v in raw]
                if None in names:
                    raise ValueError(f"label list {list(raw)!r} holds an empty or non-text name")
            else:
                names = self._split_names(_cell(raw))
            unknown = [n for n in names if self.classes and n not in self.classes]
            if unknown:
                raise ValueError(f"label {unknown[0]!r} is not one of reader.classes: {', '.join(self.classes)}")
            return names
        value = _cell(raw)
        if value is None:
            raise _NoLabel(f"missing label in column {self.label_column!r}")
        if self.label_type == "score":
            try:
                score = float(value)
            except ValueError:
                raise ValueError(f"score {value!r} is not a number") from None
            if not math.isfinite(score):
                raise ValueError(f"score {value!r} is not a finite number")
            return score
        if self.classes and value not in self.classes:
            raise ValueError(f"label {value!r} is not one of reader.classes: {', '.join(self.classes)}")
        return value

    def _rows(
        self, path: str, cells: dict[str, list], rows: list[int], log: CorruptLog, unlabelled: set[int]
    ) -> dict[int, tuple]:
        """row -> (text, pair, label) of the good ``rows``; corrupt rows are raised, or logged and left out;
        rows without a label go to ``unlabelled`` with ``unlabelled: skip`` (else they are corrupt)."""
        good = {}
        columns = [c for c in (self.text_column, self.text_pair_column) if c]
        for row in rows:
            try:
                values = [_cell(cells[column][row]) for column in columns]
                if None in values:
                    raise ValueError(f"empty or missing text in column {columns[values.index(None)]!r}")
                label = self._label(cells, row)
            except _NoLabel as err:
                if self.unlabelled == "skip":
                    unlabelled.add(row)
                else:
                    log.add(
                        CorruptDataError(
                            path,
                            f"{err} (or set reader.unlabelled: skip to leave such rows out)",
                            line=row + 1,
                            unit="row",
                        )
                    )
                continue
            except ValueError as err:
                log.add(CorruptDataError(path, str(err), line=row + 1, unit="row"))
                continue
            good[row] = (values[0], values[1] if len(values) > 1 else None, label)
        return good

    def _parts(self) -> dict[str, tuple[str, dict, np.ndarray]]:
        """Per split: (file, its columns, the split's row indices), chosen before any row is checked."""
        if self.split_by == "files":
            return {
                split: (where, cells, np.arange(len(cells[self.text_column])))
                for split, where in (("train", self.train), ("test", self.test))
                for cells in [self._table(where)]
            }
        cells = self._table(self.path)
        values = [_cell(v) for v in cells[self.split_column]] if self.split_by == "column" else None
        n = len(cells[self.text_column])
        return {split: (self.path, cells, self.split_rows(n, split, values)) for split in ("train", "test")}

    def _vocab_corpus(self) -> str:
        """Every word of ``vocab_from``'s ``vocab_columns``, one text (only its word counts matter)."""
        table = _read(self.vocab_from)
        cells = (_cell(v) for column in self._vocab_columns() for v in table[column].tolist())
        return "\n".join(c for c in cells if c is not None)

    def build(self, on_corrupt: str) -> dict[str, torch.Tensor]:
        log = CorruptLog(Path(self.path or self.train or "text").name, "all", on_corrupt)
        parts = self._parts()
        good: dict[str, dict[int, tuple]] = {}
        unlabelled: dict[str, set[int]] = {}
        for path, cells, _ in parts.values():  # each file once, its rows in file order
            if path not in good:
                rows = sorted({int(r) for where, _, idx in parts.values() if where == path for r in idx})
                good[path] = self._rows(path, cells, rows, log, unlabelled.setdefault(path, set()))
        log.report(kept=sum(len(rows) for rows in good.values()))
        excluded = {}
        for split, (path, cells, idx) in parts.items():
            left = LeftOut(Path(path).name, split)
            gone = [int(r) for r in idx if int(r) in unlabelled[path]]
            left.add(EMPTY_LABEL, len(gone), [f"row {r + 1}" for r in gone])
            left.add(CORRUPT_ROWS, sum(int(r) not in good[path] for r in idx) - len(gone))
            if self.split_by == "column":
                left.add(
                    self.neither_reason("rows"), len(self.unsplit_rows([_cell(v) for v in cells[self.split_column]]))
                )
            excluded[split] = left.state()
        read = {
            split: [list(column) for column in zip(*[good[path][r] for r in idx.tolist() if r in good[path]])]
            or [[], [], []]
            for split, (path, _, idx) in parts.items()
        }
        for split, (texts, _, _) in read.items():
            if not texts:
                key = "split_by" if self.split_by != "column" else f"{split}_value"
                raise ReaderSpecError(
                    key,
                    f"the {split} split of {self.path or getattr(self, split)} has no rows (split_by: {self.split_by})",
                )
        n_train = len(read["train"][0])
        texts = read["train"][0] + read["test"][0]
        pairs = read["train"][1] + read["test"][1] if self.text_pair_column else None
        train_rows: list[int] = list(range(n_train))
        if self.vocab_from is not None:  # one extra row holding the shared corpus; dropped after encoding
            texts.append(self._vocab_corpus())
            pairs = pairs + [""] if pairs is not None else None
            train_rows = [len(texts) - 1]
        ids = encode_texts(texts, pairs, self.tokenizer, self.seq_len, self.vocab_size, train_rows)
        ids = ids[: n_train + len(read["test"][0])]
        labels = self._label_tensor(read["train"][2] + read["test"][2])
        return {
            "train_x0": ids[:n_train],
            "test_x0": ids[n_train:],
            "train_y": labels[:n_train],
            "test_y": labels[n_train:],
            "excluded": excluded,
        }

    def _label_tensor(self, labels: list) -> torch.Tensor:
        n = len(labels)
        if self.label_type == "none":
            return torch.zeros(n, dtype=torch.long)
        if self.label_type == "score":
            return torch.tensor(labels, dtype=torch.float32)
        if self.label_type == "multilabel" and self.label_columns:
            return torch.tensor(labels, dtype=torch.float32).reshape(n, len(self.label_columns))
        if self.label_type == "multilabel":
            classes = self.class_names(name for names in labels for name in names)
            out = torch.zeros(n, len(classes))
            index = {c: i for i, c in enumerate(classes)}
            for row, names in enumerate(labels):
                for name in names:
                    out[row, index[name]] = 1.0
            return out
        classes = self.class_names(labels)
        index = {c: i for i, c in enumerate(classes)}
        return torch.tensor([index[v] for v in labels], dtype=torch.long)

    def class_names(self, values) -> list[str]:
        """``classes`` if given, else the distinct values sorted (as numbers when all are integers)."""
        if self.classes:
            return [str(c) for c in self.classes]
        distinct = {str(v) for v in values}
        if distinct and all(_INTEGER.fullmatch(v) for v in distinct):
            return sorted(distinct, key=int)
        return sorted(distinct)

    def sources(self) -> list[Path]:
        """Every file the tensors are built from (their sizes and times key the cache)."""
        files = [Path(p) for p in (self.path, self.train, self.test, self.vocab_from) if p is not None]
        if self._tokenizer_is_folder():
            files += sorted(p for p in Path(self.tokenizer).expanduser().iterdir() if p.is_file())
        return files

    def load(self, split: str, cache_dir: Path, on_corrupt: str = "error"):
        return self.cached(
            "text",
            split,
            cache_dir,
            self.sources(),
            lambda: self.build(on_corrupt),
            on_corrupt,
            dataset=Path(self.path or self.train or "text").name,
        )


def text_table(split: str, cache_dir: Path, on_corrupt: str = "error", **settings):
    """Dataset of one split: ``((int32 [seq_len] ids,), label)`` (see the module docstring)."""
    return TextTable.from_mapping(settings).load(split, cache_dir, on_corrupt)
