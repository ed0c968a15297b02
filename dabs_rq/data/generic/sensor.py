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
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np
import torch

from dabs_rq.data.generic.spec import ReaderSpec, ReaderSpecError, read_table, table_columns
from dabs_rq.data.storage import CorruptDataError, CorruptLog

SUFFIXES = (".npy", ".npz", ".csv")


@dataclasses.dataclass
class SensorArrays(ReaderSpec):
    PATH_FIELDS: ClassVar[tuple[str, ...]] = ("path", "train", "test", "labels_csv")
    TARGET: ClassVar[str] = "dabs_rq.data.generic.sensor.sensor_arrays"

    path: Optional[str] = None
    train: Optional[str] = None
    test: Optional[str] = None
    pattern: str = "*"
    channels: Optional[list[str]] = None
    window: int = 100
    stride: Optional[int] = None
    normalize: bool = True
    labels_csv: Optional[str] = None
    file_column: str = "file"
    array_key: str = "x"

    def check(self) -> None:
        super().check()
        if self.window <= 0 or (self.stride is not None and self.stride <= 0):
            raise ReaderSpecError("window" if self.window <= 0 else "stride", "must be a positive integer")
        if self.split_by == "files":
            self.require("train", "with split_by: files"), self.require("test", "with split_by: files")
        else:
            self.require("path", "(a recording file or a folder of them)")
        if self.labels_csv is not None:
            needs = [("file_column", self.file_column)] + self.label_needs()
            self.check_columns(self.labels_csv, table_columns(self.labels_csv), needs)
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

    def _windows(self, signal: np.ndarray, rows: np.ndarray | None) -> tuple[list[np.ndarray], list[str | None]]:
        stride = self.stride or self.window
        starts = range(0, len(signal) - self.window + 1, stride)
        windows = [signal[s:s + self.window] for s in starts]
        labels = [Counter(rows[s:s + self.window]).most_common(1)[0][0] if rows is not None else None
                  for s in starts]
        return windows, labels

    def _read(self, files: list[Path], log: CorruptLog) -> list[tuple[Path, np.ndarray, list, list]]:
        """Per recording: (file, [n, window, C] windows, their per-row labels)."""
        out = []
        for path in files:
            try:
                recordings, row_labels = self._recording(path)
                for signal, rows in zip(recordings, row_labels):
                    if not np.isfinite(signal).all():
                        raise CorruptDataError(path, "holds NaN or infinite values")
                    windows, labels = self._windows(signal, rows)
                    if windows:
                        out.append((path, np.stack(windows), labels))
            except CorruptDataError as err:
                log.add(err)
        return out

    def build(self, on_corrupt: str) -> dict[str, torch.Tensor]:
        log = CorruptLog(Path(self.path or self.train or "").name or "sensor", "all", on_corrupt)
        if self.split_by == "files":
            parts = {"train": self._read(self.files(self.train), log), "test": self._read(self.files(self.test), log)}
        else:
            recordings = self._read(self.files(self.path), log)
            parts = self._split(recordings)
        log.report(kept=sum(len(p) for p in parts.values()))
        file_labels = self._file_labels()
        out: dict[str, torch.Tensor] = {}
        table_rows = {}
        for split, recs in parts.items():
            if not recs:
                raise ReaderSpecError("split_by", f"the {split} split has no windows (recordings shorter than "
                                                  f"window={self.window}?)")
            x = np.concatenate([w for _, w, _ in recs])
            labels = [(file_labels.get(p.name) if file_labels is not None else lab)
                      for p, w, labs in recs for lab in (labs if file_labels is None else [None] * len(w))]
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
        labels = self.labels(both)
        n_train = len(table_rows["train"])
        out["train_y"], out["test_y"] = labels[:n_train], labels[n_train:]
        return out

    def _file_labels(self) -> dict | None:
        """file name -> label (a list of values for label_columns) from ``labels_csv``."""
        if self.labels_csv is None:
            return None
        table = read_table(self.labels_csv)
        if self.label_type == "multilabel" and self.label_columns:
            return {Path(str(f)).name: list(row) for f, row in zip(table[self.file_column],
                                                                   table[self.label_columns].to_numpy())}
        column = self.label_column
        if column is None:
            return {Path(str(f)).name: None for f in table[self.file_column]}
        return {Path(str(f)).name: v for f, v in zip(table[self.file_column], table[column])}

    def _split(self, recordings: list) -> dict[str, list]:
        if self.split_by == "column":
            table = read_table(self.labels_csv)
            split_of = {Path(str(f)).name: str(s) for f, s in zip(table[self.file_column], table[self.split_column])}
            return {split: [r for r in recordings if split_of.get(r[0].name) == value]
                    for split, value in (("train", self.train_value), ("test", self.test_value))}
        if len(recordings) > 1:
            return {split: [recordings[i] for i in self.split_rows(len(recordings), split)]
                    for split in ("train", "test")}
        (path, windows, labels), = recordings
        return {split: [(path, windows[idx], [labels[i] for i in idx])]
                for split in ("train", "test") for idx in [self.split_rows(len(windows), split)]}

    def load(self, split: str, cache_dir: Path, on_corrupt: str = "error"):
        sources = [*(self.files(self.path) if self.path else []), *(self.files(self.train) if self.train else []),
                   *(self.files(self.test) if self.test else []), *([Path(self.labels_csv)] if self.labels_csv else [])]
        return self.cached("sensor", split, cache_dir, sources, lambda: self.build(on_corrupt), on_corrupt)


def sensor_arrays(split: str, cache_dir: Path, on_corrupt: str = "error", **settings):
    """Dataset of one split: ``((float32 [window, C],), label)`` (see the module docstring)."""
    return SensorArrays.from_mapping(settings).load(split, cache_dir, on_corrupt)
