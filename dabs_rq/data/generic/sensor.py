"""Generic sensor / time-series reader: arrays or tables of recordings cut into fixed windows.

Minimal YAML (files under the YAML's folder; one label per file, seeded 80/20 split by file)::

    reader:
      _target_: dabs_rq.data.generic.sensor.sensor_arrays
      path: recordings/            # .npy [T, C] / .npz (array_key) / .csv (channel columns)
      labels_csv: labels.csv       # columns: file, label
      label_column: label
      window: 100
      stride: 50
    inputs:
      - {_target_: dabs_rq.encoder.SegmentEmbedding1d, seq_len: 100, segment_size: 5, channels: <C>}

Items are ``((float32 [window, C],), label)``. Labels come from ``labels_csv`` (one row per
file: ``file_column`` + ``label_column`` [+ ``split_column``]) or, for CSV recordings without
it, from a per-row ``label_column`` (a window gets its most frequent label). Channels are
normalised per channel with the train windows' mean and std (``normalize``). ``split_by:
ratio`` splits recordings (windows of one recording never straddle train and test) unless
there is a single recording, whose windows are split; ``column`` reads ``split_column`` of
``labels_csv``; ``files`` reads ``train`` and ``test`` (a file or folder each).

Nothing is left out without a word. Two keys decide what happens to a recording that cannot give
labelled windows (``error``, the default, stops before training in one line that gives the
count, the first few and the fix; ``skip`` leaves them out, logs one line per split and counts
them in the split Dataset's ``excluded``, which the record stores):

* ``unlabelled``: a recording whose file has no row in ``labels_csv`` (so neither a label nor,
  with ``split_by: column``, a split), an empty label cell, an array file without
  ``labels_csv`` (for CSV recordings with per-row labels: the windows whose label is empty);
* ``short``: a recording shorter than ``window`` (it has no window). ``error`` by default: a
  share of the recordings silently gone changes the class balance and the numbers (a real set
  lost 81 of 640 recordings at ``window: 12``), so leaving them out is the YAML's decision,
  written where the dataset's fingerprint sees it, rather than a default.

``labels_csv`` is matched by file name (``Path(cell).name``): two recordings of one name, or a
file listed twice with different labels, is an error. Splits are drawn over every recording
read, before any is left out (corrupt files skipped with ``on_corrupt: skip`` included), so a
pretraining YAML reading the same files unlabelled gets the same split and never trains on a
transfer test recording; with ``split_by: column`` a recording whose split value is neither
``train_value`` nor ``test_value`` is in no split (counted in both splits' ``excluded``).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from dabs_rq.data.generic.spec import ReaderSpec, ReaderSpecError, blank, read_table
from dabs_rq.data.storage import CORRUPT, POLICIES, CorruptDataError, CorruptLog, LeftOut, refuse
from dabs_rq.data.windows import cut_windows, sliding_windows

SUFFIXES = (".npy", ".npz", ".csv")
#: ``excluded`` reasons (their unit first: a recording is a [T, C] array, a window one example)
NOT_LISTED = "recordings not in labels_csv"
EMPTY_LABEL = "recordings with an empty label in labels_csv"
EMPTY_WINDOW_LABEL = "windows with an empty label"
NO_LABELS = "array recordings without labels_csv"
SHORT = "recordings shorter than window"
CORRUPT_FILES = f"files {CORRUPT}"


@dataclasses.dataclass
class Recording:
    """One [T, C] recording of a file: its windows (None: no window, see ``reason``) and per-window labels."""

    path: Path
    name: str
    windows: np.ndarray | None
    labels: list
    reason: str | None = None


def _text(value: object) -> object:
    """A label cell as text (lists of cells kept), "" for an empty one."""
    if isinstance(value, list):
        return [_text(v) for v in value]
    return "" if blank(value) else str(value).strip()


def _no_label(value: object) -> bool:
    return any(_no_label(v) for v in value) if isinstance(value, list) else blank(value)


@dataclasses.dataclass
class SensorArrays(ReaderSpec):
    PATH_FIELDS: ClassVar[tuple[str, ...]] = ("path", "train", "test", "labels_csv")
    TARGET: ClassVar[str] = "dabs_rq.data.generic.sensor.sensor_arrays"

    path: str | None = None
    train: str | None = None
    test: str | None = None
    pattern: str = "*"
    channels: list[str] | None = None
    window: int = 100
    stride: int | None = None
    normalize: bool = True
    labels_csv: str | None = None
    file_column: str = "file"
    array_key: str = "x"
    short: str = "error"

    def check(self) -> None:
        super().check()
        if self.short not in POLICIES:
            raise ReaderSpecError("short", f"must be one of {', '.join(POLICIES)}, got {self.short!r}")
        if self.window <= 0 or (self.stride is not None and self.stride <= 0):
            raise ReaderSpecError("window" if self.window <= 0 else "stride", "must be a positive integer")
        if self.split_by == "files":
            self.require("train", "with split_by: files"), self.require("test", "with split_by: files")
        else:
            self.require("path", "(a recording file or a folder of them)")
        if self.labels_csv is not None:
            needs = [("file_column", self.file_column)] + self.label_needs()
            self.check_columns(self.labels_csv, self.table_header("labels_csv", self.labels_csv), needs)
        elif self.split_by == "column":
            raise ReaderSpecError("labels_csv", "is needed with split_by: column (it holds each file's split)")
        elif self.label_type != "none":
            self.require("label_column", "(per-row labels of CSV recordings, or set labels_csv)")

    def expected_inputs(self) -> list[dict]:
        inputs = {"seq_len": self.window}
        if self.channels:
            inputs["channels"] = len(self.channels)
        return [inputs]

    # ------------------------------------------------------------------ reading

    def files(self, where: str) -> list[Path]:
        root = Path(where)
        found = sorted(p for p in root.glob(self.pattern) if p.suffix.lower() in SUFFIXES) if root.is_dir() else [root]
        if not found:
            raise ReaderSpecError("path", f"no {'/'.join(SUFFIXES)} files match {self.pattern!r} in {root}")
        return found

    def _recording(self, path: Path) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        """The recordings of one file ([T, C] float arrays) and, for CSV, their per-row labels."""
        suffix = path.suffix.lower()
        if suffix == ".csv":
            table = read_table(path)
            label = self.label_column if self.labels_csv is None and self.label_type != "none" else None
            channels = self.channels or [c for c in table.columns if c not in (label, self.split_column)]
            missing = [c for c in channels + ([label] if label else []) if c not in table.columns]
            if missing:
                raise CorruptDataError(path, f"no column {missing[0]!r} (columns: {', '.join(table.columns)})")
            try:
                values = table[channels].astype("float32").to_numpy()
            except ValueError as err:
                raise CorruptDataError(path, f"a channel value is not a number ({err})") from None
            return [values], [table[label].astype(str).to_numpy() if label else None]
        try:
            array = np.load(path, allow_pickle=False)
            if suffix == ".npz":
                array = array[self.array_key]
        except (ValueError, OSError, KeyError, EOFError) as err:
            raise CorruptDataError(path, f"cannot read the array ({err})") from None
        array = np.asarray(array, dtype=np.float32)
        if array.ndim == 2:
            return [array], [None]
        if array.ndim == 3:
            return list(array), [None] * len(array)
        raise CorruptDataError(path, f"arrays must be [T, C] or [N, T, C], got shape {array.shape}")

    def _windows(self, signal: np.ndarray, rows: np.ndarray | None) -> tuple[np.ndarray | None, list[str | None]]:
        """The recording's windows (None: shorter than ``window``) and each window's most frequent row label."""
        stride = self.stride or self.window
        windows = cut_windows(signal, self.window, stride)
        if not len(windows):
            return None, []
        labels = (
            [Counter(cut).most_common(1)[0][0] for cut in sliding_windows(rows, self.window, stride)]
            if rows is not None
            else [None] * len(windows)
        )
        return windows, labels

    def _read(self, files: list[Path], log: CorruptLog) -> list[Recording]:
        """Every recording of ``files``, in order; a corrupt file (skipped) stays as one entry without a signal,
        so that leaving it out never moves another recording between the splits."""
        out = []
        for path in files:
            try:
                recordings, row_labels = self._recording(path)
                if any(not np.isfinite(signal).all() for signal in recordings):
                    raise CorruptDataError(path, "holds NaN or infinite values")
            except CorruptDataError as err:
                log.add(err)
                out.append(Recording(path, path.name, None, [], CORRUPT_FILES))
                continue
            for k, (signal, rows) in enumerate(zip(recordings, row_labels)):
                windows, labels = self._windows(signal, rows)
                name = f"{path.name}[{k}]" if len(recordings) > 1 else path.name
                out.append(Recording(path, name, windows, labels, None if windows is not None else SHORT))
        return out

    def _csv_rows(self) -> dict[str, tuple[object, str | None]] | None:
        """file name -> (label: a cell, or a list of cells for ``label_columns``; split cell) of ``labels_csv``.

        A file listed twice with different values is a :class:`ReaderSpecError`: which row holds its
        label would be a guess."""
        if self.labels_csv is None:
            return None
        table = read_table(self.labels_csv)
        if self.label_type == "multilabel" and self.label_columns:
            labels = [list(row) for row in table[list(self.label_columns)].itertuples(index=False)]
        elif self.label_column is not None and self.label_type != "none":
            labels = list(table[self.label_column])
        else:
            labels = [None] * len(table)
        splits = [str(v) for v in table[self.split_column]] if self.split_by == "column" else [None] * len(table)
        out: dict[str, tuple[object, str | None]] = {}
        first: dict[str, int] = {}
        for row, (cell, label, split) in enumerate(zip(table[self.file_column], labels, splits)):
            if blank(cell):
                continue
            name = Path(str(cell).strip()).name
            value = (_text(label), split)
            if name in out and out[name] != value:
                raise ReaderSpecError(
                    "labels_csv",
                    f"{self.labels_csv} lists {name} twice with different labels or "
                    f"splits (data rows {first[name] + 1} and {row + 1}); keep one",
                )
            out.setdefault(name, value)
            first.setdefault(name, row)
        return out

    def build(self, on_corrupt: str) -> dict:
        name = Path(self.path or self.train or "").name or "sensor"
        log = CorruptLog(name, "all", on_corrupt)
        if self.split_by == "files":
            parts = {"train": self._read(self.files(self.train), log), "test": self._read(self.files(self.test), log)}
            everything = parts["train"] + parts["test"]
        else:
            everything = self._read(self.files(self.path), log)
        log.report(kept=sum(r.windows is not None for r in everything))
        rows = self._csv_rows()
        uses_csv = rows is not None and (self.label_type != "none" or self.split_by == "column")
        if uses_csv:
            self._check_names(everything)
            for r in everything:
                if r.reason is None and r.path.name not in rows:
                    r.reason = NOT_LISTED
                elif r.reason is None and self.label_type != "none" and _no_label(rows[r.path.name][0]):
                    r.reason = EMPTY_LABEL
        elif self.label_type != "none":  # CSV recordings with per-row labels: a window whose label is empty
            for r in everything:
                if r.reason is None and r.path.suffix.lower() != ".csv":
                    r.reason = NO_LABELS  # an array file has no label column
                elif r.reason is None and any(_no_label(lab) for lab in r.labels):
                    r.reason = EMPTY_WINDOW_LABEL
        self._refuse(everything, uses_csv)
        if self.split_by != "files":
            parts = self._split(everything, rows)
        left = {split: LeftOut(name, split) for split in ("train", "test")}
        for split, recs in parts.items():
            for r in recs:
                if r.reason == EMPTY_WINDOW_LABEL:  # only its windows without a label are left out
                    keep = [k for k, lab in enumerate(r.labels) if not _no_label(lab)]
                    left[split].add(EMPTY_WINDOW_LABEL, len(r.labels) - len(keep), [r.name])
                    r.windows, r.labels, r.reason = (
                        (r.windows[keep], [r.labels[k] for k in keep], None) if keep else (None, [], None)
                    )
                elif r.reason is not None:
                    left[split].add(r.reason, 1, [r.name])
        out: dict = {}
        table_rows = {}
        for split, recs in parts.items():
            recs = [r for r in recs if r.reason is None and r.windows is not None]
            if not recs:
                why = (
                    f"; {left[split].line()}"
                    if len(left[split])
                    else f" (recordings shorter than window={self.window}?)"
                )
                raise ReaderSpecError("split_by", f"the {split} split has no windows{why}")
            x = np.concatenate([r.windows for r in recs])
            labels = [
                (rows[r.path.name][0] if uses_csv else lab)
                for r in recs
                for lab in (r.labels if not uses_csv else [None] * len(r.windows))
            ]
            table_rows[split] = labels
            out[f"{split}_x0"] = torch.from_numpy(x)
        if self.normalize:
            mean = out["train_x0"].mean(dim=(0, 1), keepdim=True)
            std = out["train_x0"].std(dim=(0, 1), keepdim=True).clamp_min(1e-6)
            for split in parts:
                out[f"{split}_x0"] = (out[f"{split}_x0"] - mean) / std
        import pandas as pd

        column = self.label_column or "label"
        both = pd.DataFrame({column: table_rows["train"] + table_rows["test"]})
        if self.label_type == "multilabel" and self.label_columns:
            both = pd.DataFrame([r for r in table_rows["train"] + table_rows["test"]], columns=self.label_columns)
        try:
            labels = self.labels(both)
        except ValueError as err:
            key = "label_columns" if self.label_type == "multilabel" and self.label_columns else "label_column"
            raise ReaderSpecError(
                "classes" if self.classes and "reader.classes" in str(err) else key,
                f"{self.labels_csv or 'the recordings'}: {err}",
            ) from None
        n_train = len(table_rows["train"])
        out["train_y"], out["test_y"] = labels[:n_train], labels[n_train:]
        out["excluded"] = {split: left[split].state() for split in ("train", "test")}
        return out

    def _check_names(self, recordings: list[Recording]) -> None:
        """``labels_csv`` matches recordings by file name: two files of one name would share a row."""
        seen: dict[str, Path] = {}
        for r in recordings:
            other = seen.setdefault(r.path.name, r.path)
            if other != r.path:
                raise ReaderSpecError(
                    "labels_csv",
                    f"matches recordings by file name, and {other} and {r.path} are "
                    "both named " + r.path.name + "; rename one",
                )

    def _refuse(self, recordings: list[Recording], uses_csv: bool) -> None:
        """Stop in one line for recordings without a label (``unlabelled: error``) or shorter than ``window``
        (``short: error``), counted over the whole dataset, before any split is drawn."""

        def names(reason: str) -> list[str]:
            return [r.name for r in recordings if r.reason == reason]

        where = f"{self.labels_csv}" if uses_csv else ""
        for reason, what, fix in (
            (NOT_LISTED, f"recordings are not in labels_csv {where}", "add a row for each"),
            (
                EMPTY_LABEL,
                f"recordings have an empty {self.label_column or 'label'} cell in {where}",
                "fill in their labels",
            ),
            (EMPTY_WINDOW_LABEL, f"recordings hold windows whose {self.label_column} is empty", "fill in the labels"),
            (NO_LABELS, f"array recordings have no {self.label_column} column to label them", "set reader.labels_csv"),
        ):
            found = names(reason)
            self.refuse_unlabelled(len(found), what, found, fix)
        short = names(SHORT)
        if short and self.short != "skip":
            raise refuse(
                "short",
                len(short),
                f"recordings are shorter than window={self.window} steps",
                short,
                "lower reader.window",
            )

    def _split(self, recordings: list[Recording], rows: dict | None) -> dict[str, list]:
        """Recordings per split, drawn over every recording read (those left out included)."""
        if self.split_by == "column":
            parts: dict[str, list] = {"train": [], "test": []}
            for r in recordings:
                value = rows[r.path.name][1] if r.path.name in rows else None
                if value == str(self.train_value):
                    parts["train"].append(r)
                elif value == str(self.test_value):
                    parts["test"].append(r)
                else:  # in no split: counted in both
                    reason = (
                        f"{r.reason} (so in no split)"
                        if r.reason in (NOT_LISTED, CORRUPT_FILES)
                        else self.neither_reason("recordings")
                    )
                    for part in parts.values():
                        part.append(Recording(r.path, r.name, None, [], reason))
            return parts
        if len(recordings) > 1:
            return {
                split: [recordings[i] for i in self.split_rows(len(recordings), split)] for split in ("train", "test")
            }
        (r,) = recordings  # a single recording: its windows are split
        if r.windows is None or r.reason not in (None, EMPTY_WINDOW_LABEL):
            return {"train": [r], "test": []}  # nothing to split: counted once
        return {
            split: [Recording(r.path, r.name, r.windows[idx], [r.labels[i] for i in idx], r.reason)]
            for split in ("train", "test")
            for idx in [self.split_rows(len(r.windows), split)]
        }

    def load(self, split: str, cache_dir: Path, on_corrupt: str = "error"):
        sources = [
            *(self.files(self.path) if self.path else []),
            *(self.files(self.train) if self.train else []),
            *(self.files(self.test) if self.test else []),
            *([Path(self.labels_csv)] if self.labels_csv else []),
        ]
        return self.cached(
            "sensor",
            split,
            cache_dir,
            sources,
            lambda: self.build(on_corrupt),
            on_corrupt,
            dataset=Path(self.path or self.train or "").name,
        )


def sensor_arrays(split: str, cache_dir: Path, on_corrupt: str = "error", **settings):
    """Dataset of one split: ``((float32 [window, C],), label)`` (see the module docstring)."""
    return SensorArrays.from_mapping(settings).load(split, cache_dir, on_corrupt)
