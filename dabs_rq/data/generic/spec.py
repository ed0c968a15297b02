"""What every generic reader shares: a declared schema, how a split is chosen, how labels are read.

A generic reader is a dataclass (its schema: field names, types, defaults) whose YAML mapping
is validated when the domain YAML is loaded, before any job starts:

* an unknown key, a value of the wrong type, a missing file or a missing column is a
  :class:`~dabs_rq.data.domains.DomainConfigError` naming the YAML file, ``reader.<key>`` and
  what is expected;
* relative paths are resolved against the YAML file's folder, so a domain folder holding its
  YAML and its data can be moved as a whole.

Splits (``split_by``): ``ratio`` (a seeded random ``test_fraction`` of the rows), ``column``
(a column's value, ``train_value`` / ``test_value``) or ``files`` (the reader's ``train`` and
``test`` sources). Labels (``label_type``): ``none`` (pretraining: labels ignored), ``class``
(one label per row; class order ``classes`` or the sorted distinct values), ``multilabel``
(several ``label_columns`` of 0/1, or one column of names separated by ``label_separator``) or
``score`` (a number, for regression).

Examples are never given a wrong label and never left out without a word. ``unlabelled``
(``error`` by default, or ``skip``) decides what happens to an example the labels do not cover:
a file with no row in ``labels_csv`` (which also gives it no split with ``split_by: column``),
an empty label cell (``class``, ``score``, an empty 0/1 cell of ``label_columns``; an empty
``multilabel`` cell of names means "no label applies" and is kept), a file outside the class
subfolders of a folder-labelled reader. ``error`` stops in one line with the count, the first
few, and the fix; ``skip`` leaves them out, logs one line per split and counts them in the split
Dataset's ``excluded`` (``{reason: count}``, stored in the record; see
:class:`~dabs_rq.data.storage.LeftOut`). Splits are drawn before anything is left out, so leaving
an example out never moves another between train and test (a pretraining YAML that reads the
same files unlabelled splits them the same way). With ``split_by: column``, rows whose
``split_column`` is neither ``train_value`` nor ``test_value`` (a ``valid`` fold) belong to no
split: they are counted under their own reason in both splits' ``excluded``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from dabs_rq.data.array_cache import source_identity
from dabs_rq.data.splits import check_split
from dabs_rq.data.storage import POLICIES, LeftOut, refuse
from dabs_rq.data.tensor_dataset import TensorInputsDataset, cached_tensors, seeded_split
from dabs_rq.errors import UserError

SPLIT_BY = ("ratio", "column", "files")
LABEL_TYPES = ("none", "class", "multilabel", "score")
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
#: how a 0/1 label cell may be written (any case)
TRUE, FALSE = ("1", "1.0", "true", "yes"), ("0", "0.0", "false", "no")


class AtLeast(int):
    """An expected embedder setting that may be larger than this (a vocabulary size)."""

    def __repr__(self) -> str:
        return f"at least {int(self)}"


class ReaderSpecError(UserError):
    """A generic reader's YAML mapping is wrong: ``key`` and what is expected (the loader adds the file)."""

    def __init__(self, key: str, expected: str) -> None:
        self.key, self.expected = key, expected
        super().__init__(f"reader.{key}: {expected}")


@dataclasses.dataclass
class ReaderSpec:
    """Fields every generic reader has (splits and labels); subclasses add their sources and shapes."""

    #: field names holding paths (resolved against the YAML's folder, checked to exist)
    PATH_FIELDS: ClassVar[tuple[str, ...]] = ()
    #: the reader function a YAML names in ``_target_``
    TARGET: ClassVar[str] = ""

    split_by: str = "ratio"
    test_fraction: float = 0.2
    split_seed: int = 0
    split_column: str | None = None
    train_value: str = "train"
    test_value: str = "test"
    label_type: str = "class"
    label_column: str | None = None
    label_columns: list[str] | None = None
    label_separator: str | None = None
    classes: list[str] | None = None
    unlabelled: str = "error"

    # ------------------------------------------------------------------ construction and checks

    @classmethod
    def from_mapping(cls, mapping: dict, base: Path | None = None) -> ReaderSpec:
        """Typed, checked spec from a YAML mapping (``_target_`` and run-time keys left out)."""
        values = {k: v for k, v in mapping.items() if k not in ("_target_", "cache_dir", "split")}
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                raise ReaderSpecError(
                    key, f"is not a key of {cls.TARGET.rsplit('.', 1)[-1]}; valid keys: {', '.join(names)}"
                )
        try:
            typed = OmegaConf.merge(OmegaConf.structured(cls), OmegaConf.create(values))
        except ValidationError as err:
            key = str(getattr(err, "full_key", "") or "?")
            field = {f.name: f for f in dataclasses.fields(cls)}.get(key.split(".")[0])
            expected = getattr(field.type, "__name__", str(field.type)) if field else "another type"
            raise ReaderSpecError(key, f"must be of type {expected}, got {values.get(key)!r}") from None
        except ConfigKeyError as err:  # pragma: no cover - unknown keys are caught above
            raise ReaderSpecError("?", str(err).splitlines()[0]) from None
        for f in dataclasses.fields(cls):
            if OmegaConf.is_missing(typed, f.name):
                raise ReaderSpecError(f.name, "is missing")
        spec = cls(**OmegaConf.to_container(typed))
        if base is not None:
            spec.resolve_paths(base)
        spec.check()
        return spec

    def resolve_paths(self, base: Path) -> None:
        for name in self.PATH_FIELDS:
            value = getattr(self, name)
            if value is not None and not Path(str(value)).expanduser().is_absolute():
                setattr(self, name, str((base / str(value)).resolve()))
            elif value is not None:
                setattr(self, name, str(Path(str(value)).expanduser()))

    def check(self) -> None:
        """Values, files and columns; subclasses extend it (call ``super().check()``)."""
        if self.split_by not in SPLIT_BY:
            raise ReaderSpecError("split_by", f"must be one of {', '.join(SPLIT_BY)}, got {self.split_by!r}")
        if self.label_type not in LABEL_TYPES:
            raise ReaderSpecError("label_type", f"must be one of {', '.join(LABEL_TYPES)}, got {self.label_type!r}")
        if self.unlabelled not in POLICIES:
            raise ReaderSpecError("unlabelled", f"must be one of {', '.join(POLICIES)}, got {self.unlabelled!r}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ReaderSpecError("test_fraction", f"must be in (0, 1), got {self.test_fraction}")
        if self.split_by == "column" and not self.split_column:
            raise ReaderSpecError(
                "split_column", "is needed with split_by: column (the column naming each row's split)"
            )
        for name in self.PATH_FIELDS:
            value = getattr(self, name)
            if value is not None and not Path(value).exists():
                raise ReaderSpecError(name, f"file or folder {value} does not exist")

    def require(self, key: str, why: str) -> Any:
        value = getattr(self, key)
        if value in (None, "", []):
            raise ReaderSpecError(key, f"is needed {why}")
        return value

    def table_header(self, key: str, path: str | Path) -> list[str]:
        """The columns of the table file that ``reader.<key>`` names, refusing an empty table in one line:
        a 0-byte file, or a CSV/TSV/parquet table with a header but no rows."""
        path = Path(path)
        if path.is_dir():
            raise ReaderSpecError(key, f"{path} is a folder; give a {'/'.join(TABLE_SUFFIXES)} file")
        if path.is_file() and path.stat().st_size == 0:
            raise ReaderSpecError(
                key, f"{path} is empty (0 bytes); write a header row naming its columns, then one row per example"
            )
        try:
            columns = table_columns(path)
        except (ValueError, OSError) as err:
            raise ReaderSpecError(key, f"cannot read the columns of {path} ({str(err).splitlines()[0]})") from None
        if not table_has_rows(path):
            raise ReaderSpecError(
                key, f"{path} has a header ({', '.join(columns)}) but no rows; add one row per example"
            )
        return columns

    def check_columns(self, source: str, columns: Sequence[str], needed: Iterable[tuple[str, str | None]]) -> None:
        """Every ``(key, column)`` with a column set must name a column of the table ``source``."""
        for key, column in needed:
            if column is not None and column not in columns:
                raise ReaderSpecError(key, f"column {column!r} is not in {source}; its columns: {', '.join(columns)}")

    def label_needs(self) -> list[tuple[str, str | None]]:
        """The (key, column) pairs the labels and split read from a table."""
        needs: list[tuple[str, str | None]] = []
        if self.label_type in ("class", "score"):
            needs.append(("label_column", self.require("label_column", f"with label_type: {self.label_type}")))
        elif self.label_type == "multilabel":
            if self.label_columns:
                needs += [("label_columns", c) for c in self.label_columns]
            else:
                needs.append(
                    ("label_column", self.require("label_column", "with label_type: multilabel (or label_columns)"))
                )
        if self.split_by == "column":
            needs.append(("split_column", self.split_column))
        return needs

    def settings(self) -> dict:
        return dataclasses.asdict(self)

    def expected_inputs(self) -> list[dict]:
        """Per input, the embedder settings the reader's items imply (e.g. ``{"image_size": [64, 64]}``);
        the domain loader checks the YAML's ``inputs`` against them. Empty: nothing to check."""
        return []

    # ------------------------------------------------------------------ splits and labels

    def split_rows(self, n: int, split: str, split_values: Sequence[str] | None = None) -> np.ndarray:
        """Row indices of ``split`` among ``n`` rows (``files`` splits are chosen by the reader)."""
        check_split(split)
        if self.split_by == "ratio":
            train, test = seeded_split(n, self.test_fraction, self.split_seed)
            return train if split == "train" else test
        if self.split_by == "column":
            wanted = self.train_value if split == "train" else self.test_value
            values = np.asarray([str(v) for v in split_values])
            return np.flatnonzero(values == str(wanted))
        return np.arange(n)

    def unsplit_rows(self, split_values: Sequence[Any] | None) -> np.ndarray:
        """Rows in neither split: ``split_by: column`` values that are neither ``train_value`` nor ``test_value``."""
        if self.split_by != "column" or split_values is None:
            return np.zeros(0, dtype=np.int64)
        values = np.asarray([str(v) for v in split_values])
        return np.flatnonzero((values != str(self.train_value)) & (values != str(self.test_value)))

    def neither_reason(self, unit: str = "rows") -> str:
        """The ``excluded`` reason of rows in no split (:meth:`unsplit_rows`)."""
        return f"{unit} in neither split ({self.split_column} is neither {self.train_value!r} nor {self.test_value!r})"

    def missing_labels(self, table: Any) -> np.ndarray:
        """Per row of ``table``: True where it has no label (an empty ``class`` / ``score`` cell, an empty
        0/1 cell of ``label_columns``); never for ``none``, nor for an empty ``multilabel`` cell of names."""
        n = len(table)
        if self.label_type == "class" or self.label_type == "score":
            return np.array([blank(v) for v in table[self.label_column]], dtype=bool).reshape(n)
        if self.label_type == "multilabel" and self.label_columns:
            return np.array(
                [any(blank(v) for v in row) for row in table[list(self.label_columns)].itertuples(index=False)],
                dtype=bool,
            ).reshape(n)
        return np.zeros(n, dtype=bool)

    def refuse_unlabelled(self, count: int, what: str, names: Sequence[str], fix: str) -> None:
        """Stop in one line for ``count`` examples without a label unless ``unlabelled: skip``."""
        if count and self.unlabelled != "skip":
            raise refuse("unlabelled", count, what, names, fix)

    def labels(self, table: Any) -> torch.Tensor:
        """Labels of every row of ``table`` (a ``pandas.DataFrame``) as the task expects them.

        Rows without a label (:meth:`missing_labels`) get a placeholder (0, or NaN for scores) and
        do not shape the class list: the caller leaves them out (``unlabelled``). A malformed label
        (a score that is no number, a 0/1 column holding anything else, a class not in ``classes``)
        is a ``ValueError`` naming the row.
        """
        n = len(table)
        if self.label_type == "none":
            return torch.zeros(n, dtype=torch.long)
        missing = self.missing_labels(table)
        if self.label_type == "score":
            values = np.full(n, np.nan)
            for row, cell in enumerate(table[self.label_column]):
                if missing[row]:
                    continue
                try:
                    values[row] = float(cell)
                except (TypeError, ValueError):
                    pass
                if not np.isfinite(values[row]):
                    raise ValueError(f"row {row + 1}: label {cell!r} is not a number")
            return torch.tensor(values, dtype=torch.float32)
        if self.label_type == "multilabel":
            if self.label_columns:
                out = torch.zeros(n, len(self.label_columns))
                for row, cells in enumerate(table[list(self.label_columns)].itertuples(index=False)):
                    if missing[row]:
                        continue
                    for k, (column, cell) in enumerate(zip(self.label_columns, cells)):
                        text = str(cell).strip().lower()
                        if text not in TRUE + FALSE:
                            raise ValueError(f"row {row + 1}: label column {column!r} holds {cell!r}, not 0 or 1")
                        out[row, k] = 1.0 if text in TRUE else 0.0
                return out
            names = [self._split_names(v) for v in table[self.label_column]]
            classes = self.class_names(n for row in names for n in row)
            unknown = [name for row in names for name in row if name not in classes]
            if unknown:
                raise ValueError(f"label {unknown[0]!r} is not one of reader.classes: {', '.join(classes)}")
            out = torch.zeros(n, len(classes))
            for row, row_names in enumerate(names):
                for name in row_names:
                    out[row, classes.index(name)] = 1.0
            return out
        values = [str(v).strip() for v in table[self.label_column]]
        classes = self.class_names(v for v, gone in zip(values, missing) if not gone)
        index = {c: i for i, c in enumerate(classes)}
        unknown = [v for v, gone in zip(values, missing) if not gone and v not in index]
        if unknown:
            raise ValueError(f"label {unknown[0]!r} is not one of reader.classes: {', '.join(classes)}")
        return torch.tensor([0 if gone else index[v] for v, gone in zip(values, missing)], dtype=torch.long)

    def _split_names(self, value: Any) -> list[str]:
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
        return [part.strip() for part in text.split(self.label_separator or "|") if part.strip()]

    def class_names(self, values: Iterable[str]) -> list[str]:
        """``classes`` if given, else the sorted distinct values (the same for every split)."""
        return [str(c) for c in self.classes] if self.classes else sorted({str(v) for v in values})

    # ------------------------------------------------------------------ caching

    def cached(
        self,
        name: str,
        split: str,
        cache_dir: Path,
        sources: Iterable[Path],
        build: Any,
        on_corrupt: str = "error",
        dataset: str = "",
    ) -> TensorInputsDataset:
        """The split's tensors, built once per (settings, on_corrupt, source files' size and mtime).

        ``build`` returns ``{split}_x<k>`` / ``{split}_y`` tensors and ``excluded``: per split, a
        :meth:`LeftOut.state <dabs_rq.data.storage.LeftOut.state>`; the dataset returned carries
        that split's ``excluded`` counts (and logs its line) on every load.
        """
        check_split(split)
        stamp = source_identity(None, files=sorted(Path(s) for s in sources))
        blob = json.dumps([self.settings(), on_corrupt, stamp], sort_keys=True, default=str)
        key = hashlib.sha1(blob.encode()).hexdigest()
        data = cached_tensors(Path(cache_dir) / "generic" / f"{name}_{key[:16]}.pt", build)
        inputs = [data[k] for k in sorted(data) if k.startswith(f"{split}_x")]
        left = LeftOut.from_state(dataset or name, split, (data.get("excluded") or {}).get(split))
        return left.attach(TensorInputsDataset(inputs, data[f"{split}_y"]))


def blank(value: Any) -> bool:
    """An empty cell: None, NaN / NA, or text that is only spaces (a list cell is not blank)."""
    if value is None:
        return True
    if isinstance(value, (list, tuple, dict, np.ndarray)):
        return False
    try:
        if value != value:  # NaN, pandas NA raises below
            return True
    except (TypeError, ValueError):
        return True
    return not str(value).strip()


def read_table(path: str | Path) -> Any:
    """A CSV / TSV / JSONL / JSON / parquet file as a ``pandas.DataFrame`` (every cell as read)."""
    import pandas as pd

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(f"{path}: tables must be one of {', '.join(TABLE_SUFFIXES)}")
    if suffix in (".csv", ".tsv"):
        return pd.read_csv(
            path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False, quoting=csv.QUOTE_MINIMAL
        )
    if suffix == ".jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    if suffix == ".json":
        return pd.read_json(path, dtype=False)
    return pd.read_parquet(path)


def table_has_rows(path: str | Path) -> bool:
    """Whether a CSV/TSV or parquet table has a row below its header (other kinds: read and counted)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8") as handle:
            rows = csv.reader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            next(rows, None)
            return any(any(cell.strip() for cell in row) for row in rows)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_metadata(path).num_rows > 0
    return len(read_table(path)) > 0


def table_columns(path: str | Path) -> list[str]:
    """Column names of a table file (reads only the header of CSV/TSV files)."""
    path = Path(path)
    if path.suffix.lower() in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8") as handle:
            return next(csv.reader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ","), [])
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    return list(read_table(path).columns)
