"""Generic image readers: a folder of class subfolders, or image files listed in a table.

Minimal YAML, a folder with one subfolder per class (torchvision's ``ImageFolder`` layout;
seeded 80/20 split over the files)::

    reader:
      _target_: dabs_rq.data.generic.images.image_folder
      root: pets/                  # pets/cat/001.jpg, pets/dog/abc.png, ...
      image_size: [64, 64]         # [H, W]: every image is resized to it
    inputs:
      - {_target_: dabs_rq.encoder.PatchEmbedding2d, image_size: [64, 64], patch_size: [8, 8], channels: 3}
    task: {_target_: dabs_rq.tasks.MulticlassTask, num_classes: <number of subfolders>}

Minimal YAML, image files listed in a table (CSV / TSV / JSONL / JSON / parquet)::

    reader:
      _target_: dabs_rq.data.generic.images.image_table
      table: labels.csv            # columns: path, label (paths relative to images_root)
      images_root: images/         # default: the table's folder
      label_column: label
      image_size: [64, 64]

Items are ``((float32 [channels, H, W] in [0, 1],), label)``: each image is opened as RGB,
resized to ``image_size`` (``channels: 1`` then makes it grayscale) and stored once as uint8
in a memory-mapped cache under ``cache_dir`` (:mod:`dabs_rq.data.image_cache`); items are
that row / 255, so the cache costs a quarter of float32's disk space. A cache is keyed by the
image files (path, size, modification time), ``image_size`` and ``channels``: a changed or
replaced file builds a new one.

``image_folder`` keys: ``root`` (or ``train`` and ``test`` folders with ``split_by: files``),
``image_size``, ``channels`` (3, or 1 for grayscale), ``split_by`` (``ratio`` | ``files``),
``test_fraction``, ``split_seed``, ``label_type`` (``class``: the subfolder name, in the order
of ``classes`` if given, else sorted; ``none``: any folder of images, subfolders optional, for
pretraining) and ``classes``. Files with an image suffix (``.jpg .jpeg .png .ppm .bmp .pgm
.tif .tiff .webp``, any case) are found at any depth below a class folder; names starting
with ``.`` are ignored.

``image_table`` keys: ``table`` (or ``train`` and ``test`` tables with ``split_by: files``),
``images_root``, ``path_column`` (default ``path``; relative to ``images_root``, or absolute),
``image_size``, ``channels`` and every split and label key of
:mod:`dabs_rq.data.generic.spec`: ``label_type`` ``class`` (``label_column``), ``multilabel``
(``label_columns`` of 0/1, or ``label_column`` + ``label_separator``), ``score``
(``label_column``, a number) or ``none``; ``split_by`` ``ratio``, ``column``
(``split_column``, ``train_value``, ``test_value``) or ``files``. Several rows may name one
image file: it is decoded and stored once.

Corrupt or truncated image files raise :class:`~dabs_rq.data.storage.CorruptDataError`
naming the file; a table row whose image file is missing (or whose path cell is empty) is a
corrupt row, named by table and line. With ``on_corrupt: skip`` such samples are left out and
counted, one summary line per split.

No example is labelled wrong or left out without a word. ``unlabelled`` (``error`` by default,
or ``skip``): an image file lying directly in ``root`` (or in ``train`` / ``test``) beside the
class subfolders, which no class names, or a table row whose label cell is empty (``class``,
``score``, a 0/1 cell of ``label_columns``), stops the run in one line naming the first few and
the count, or is left out and counted. Splits are drawn over every image (every row) first, so
the same folder read with ``label_type: none`` (pretraining) is split the same way. A table row
whose ``split_column`` is neither ``train_value`` nor ``test_value`` is in no split. Every split
Dataset carries ``excluded`` (``{reason: count}``: these reasons and the corrupt files
skipped), which the record stores, and logs one line when it is not empty.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from omegaconf import MISSING
from torchvision import transforms

from dabs_rq.data import image_cache
from dabs_rq.data.array_cache import source_identity
from dabs_rq.data.generic.spec import TABLE_SUFFIXES, ReaderSpec, ReaderSpecError, read_table
from dabs_rq.data.image_cache import FileImages, ImageDataset
from dabs_rq.data.splits import check_split
from dabs_rq.data.storage import CORRUPT, CorruptDataError, CorruptLog, LeftOut

#: suffixes of image files (torchvision's ``IMG_EXTENSIONS``), matched in any case
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


#: ``excluded`` reasons
CORRUPT_IMAGES = f"examples whose image is {CORRUPT}"
CORRUPT_ROWS = f"rows {CORRUPT}"
LOOSE = "images outside the class subfolders"
EMPTY_LABEL = "rows with an empty label"


# --------------------------------------------------------------------------- shared by every image reader


@dataclasses.dataclass
class ImageSpec(ReaderSpec):
    """Fields every generic image reader has: the stored image shape."""

    image_size: list[int] = MISSING
    channels: int = 3

    def check(self) -> None:
        super().check()
        size = list(self.image_size)
        if len(size) != 2 or any(s <= 0 for s in size):
            raise ReaderSpecError("image_size", f"must be [H, W], two positive integers, got {size}")
        if self.channels not in (1, 3):
            raise ReaderSpecError("channels", f"must be 3 (RGB) or 1 (grayscale), got {self.channels}")

    def expected_inputs(self) -> list[dict]:
        """The image input's ``PatchEmbedding2d`` settings (checked against the YAML's ``inputs``)."""
        return [{"image_size": [int(s) for s in self.image_size], "channels": int(self.channels)}]

    def transform(self) -> transforms.Compose:
        """PIL (RGB) -> PIL resized to ``image_size`` (grayscale with ``channels: 1``)."""
        steps: list[Any] = [transforms.Resize(tuple(int(s) for s in self.image_size))]
        if self.channels == 1:
            steps.append(transforms.Grayscale(1))
        return transforms.Compose(steps)

    def image_split(
        self,
        kind: str,
        split: str,
        paths: Sequence[Path],
        labels: torch.Tensor,
        cache_dir: Path,
        log: CorruptLog,
        extra: Sequence[np.ndarray] = (),
        left: LeftOut | None = None,
    ) -> ImageDataset:
        """Items ``((image, *extra), label)`` of the image files ``paths`` (one per example; repeats decoded once).

        Corrupt files go to ``log`` (stop, or leave their examples out); ``log`` reports once. The
        dataset carries ``excluded``: ``left``'s counts and the examples of corrupt images.
        """
        left = left if left is not None else LeftOut(log.dataset, split)
        if not paths:
            log.report(kept=0)
            why = f"; {left.line()}" if len(left) else ""
            raise ReaderSpecError("split_by", f"the {split} split holds no images{why}")
        unique = list(dict.fromkeys(str(p) for p in paths))
        row_of = {p: i for i, p in enumerate(unique)}
        rows = np.fromiter((row_of[str(p)] for p in paths), dtype=np.int64, count=len(paths))
        size = [int(s) for s in self.image_size]
        cache = image_cache.cache_file(
            cache_dir,
            f"generic_{kind}",
            split,
            source=source_identity(None, files=unique),
            image_size=size,
            channels=self.channels,
        )
        dataset = image_cache.image_dataset(
            FileImages(unique),
            len(unique),
            self.transform(),
            labels.numpy(),
            cache=cache,
            shape=(self.channels, *size),
            rows=rows,
            extra=extra,
            channels=self.channels,
            corrupt=log,
        )
        left.add(CORRUPT_IMAGES, len(paths) - len(dataset))
        return left.attach(dataset)


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def image_files(folder: Path) -> list[Path]:
    """Image files at any depth below ``folder`` (symlinked folders followed, hidden names skipped), sorted."""
    found = []
    for where, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(where) / f for f in files if _is_image(f)]
    return sorted(found)


def subfolders(folder: Path) -> list[str]:
    """Names of the (non-hidden) folders directly in ``folder``, sorted."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


# --------------------------------------------------------------------------- a folder of class folders


@dataclasses.dataclass
class ImageFolder(ImageSpec):
    PATH_FIELDS: ClassVar[tuple[str, ...]] = ("root", "train", "test")
    TARGET: ClassVar[str] = "dabs_rq.data.generic.images.image_folder"

    root: str | None = None
    train: str | None = None
    test: str | None = None

    def check(self) -> None:
        if self.split_by not in ("ratio", "files"):
            raise ReaderSpecError(
                "split_by",
                f"must be ratio or files for image_folder (a folder has no split column), got {self.split_by!r}",
            )
        if self.label_type not in ("class", "none"):
            raise ReaderSpecError(
                "label_type",
                f"must be class (the subfolder names) or none for image_folder, "
                f"got {self.label_type!r}; use image_table for other labels",
            )
        for key in ("label_column", "label_columns", "label_separator", "split_column"):
            if getattr(self, key) not in (None, []):
                raise ReaderSpecError(key, "is not used by image_folder (labels are subfolder names); remove it")
        super().check()
        keys = ("train", "test") if self.split_by == "files" else ("root",)
        for key in keys:
            self.require(key, "with split_by: files" if self.split_by == "files" else "(the folder of images)")
            if not Path(getattr(self, key)).is_dir():
                raise ReaderSpecError(key, f"must be a folder, got the file {getattr(self, key)}")
        if self.label_type == "class":
            found = {key: subfolders(Path(getattr(self, key))) for key in keys}
            for key, names in found.items():
                if not names:
                    raise ReaderSpecError(
                        key,
                        f"{getattr(self, key)} holds no class subfolders (one folder per "
                        "class; set label_type: none for unlabelled images)",
                    )
                if self.classes:
                    extra = [n for n in names if n not in self.class_names([])]
                    if extra:
                        raise ReaderSpecError(
                            "classes", f"does not list the subfolder(s) {', '.join(extra)} of {getattr(self, key)}"
                        )
            if self.classes:
                missing = [c for c in self.class_names([]) if not any(c in n for n in found.values())]
                if missing:
                    raise ReaderSpecError(
                        "classes",
                        f"names {', '.join(missing)}, which is not a subfolder of "
                        f"{' or '.join(getattr(self, k) for k in keys)}",
                    )

    def folders(self) -> dict[str, str]:
        return {"train": self.train, "test": self.test} if self.split_by == "files" else {"all": self.root}

    def samples(self, folder: str, classes: list[str]) -> tuple[list[Path], list[int], np.ndarray]:
        """Every image file of ``folder``, its class index (0 for label_type: none) and whether it lies
        outside the class subfolders (no class: ``unlabelled``)."""
        paths = image_files(Path(folder))
        if self.label_type == "none":
            return paths, [0] * len(paths), np.zeros(len(paths), dtype=bool)
        index = {name: i for i, name in enumerate(classes)}
        labels, loose = [], []
        for path in paths:
            parts = path.relative_to(folder).parts
            labels.append(index.get(parts[0], 0) if len(parts) > 1 else 0)
            loose.append(len(parts) == 1 or parts[0] not in index)
        return paths, labels, np.asarray(loose, dtype=bool)

    def load(self, split: str, cache_dir: Path, on_corrupt: str = "error") -> ImageDataset:
        check_split(split)
        folders = self.folders()
        classes = (
            self.class_names(n for f in folders.values() for n in subfolders(Path(f)))
            if self.label_type == "class"
            else []
        )
        found = {key: self.samples(folder, classes) for key, folder in folders.items()}
        outside = [p for paths, _, loose in found.values() for p, out in zip(paths, loose) if out]
        self.refuse_unlabelled(
            len(outside),
            f"images lie outside the class subfolders of {' and '.join(folders.values())}",
            [p.name for p in outside],
            "move them into a class subfolder",
        )
        if self.split_by == "files":
            paths, labels, loose = found[split]
            if not paths:
                raise ReaderSpecError(split, f"no image files ({' '.join(IMAGE_SUFFIXES)}) in {folders[split]}")
        else:
            all_paths, all_labels, all_loose = found["all"]
            if not all_paths:
                raise ReaderSpecError("root", f"no image files ({' '.join(IMAGE_SUFFIXES)}) in {self.root}")
            idx = self.split_rows(len(all_paths), split)  # over every image: the same split as label_type: none
            if not len(idx):
                raise ReaderSpecError("test_fraction", f"leaves the {split} split of {len(all_paths)} images empty")
            paths, labels, loose = [all_paths[i] for i in idx], [all_labels[i] for i in idx], all_loose[idx]
        log = CorruptLog(Path(folders.get(split) or self.root).name, split, on_corrupt)
        left = LeftOut(log.dataset, split)
        left.add(LOOSE, int(loose.sum()), [p.name for p, out in zip(paths, loose) if out])
        keep = np.flatnonzero(~loose)
        return self.image_split(
            "folder",
            split,
            [paths[i] for i in keep],
            torch.tensor([labels[i] for i in keep], dtype=torch.long),
            cache_dir,
            log,
            left=left,
        )


def image_folder(split: str, cache_dir: Path, on_corrupt: str = "error", **settings) -> ImageDataset:
    """Dataset of one split: ``((float32 [C, H, W] in [0, 1],), label)`` (see the module docstring)."""
    return ImageFolder.from_mapping(settings).load(split, Path(cache_dir), on_corrupt)


# --------------------------------------------------------------------------- image files listed in a table


class TableRows(NamedTuple):
    """Every row of the reader's table(s), with where each row came from and each split's row indices."""

    table: Any  # pandas.DataFrame of all rows (train table first with split_by: files)
    sources: list[Path]  # the table files
    source: np.ndarray  # per row: index into ``sources``
    index: np.ndarray  # per row: 0-based row of its table
    splits: dict[str, np.ndarray]  # "train" / "test" -> row indices

    def name(self, i: int) -> str:
        """``<table file> line <n>`` (or ``row <n>``) of row ``i``, for messages."""
        table = self.sources[self.source[i]]
        line, unit = row_location(table, int(self.index[i]))
        return f"{table.name} {unit} {line}"


def cell_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


def row_location(table: Path, row: int) -> tuple[int, str]:
    """1-based (line, "line") of a text table's 0-based data row, or (row, "row") of a JSON / parquet file."""
    suffix = table.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return row + 2, "line"  # after the header
    if suffix == ".jsonl":
        return row + 1, "line"
    return row + 1, "row"


@dataclasses.dataclass
class TableImages(ImageSpec):
    """Image files named by a table column (``PATH_KEY``); the base of ``image_table`` and ``image_text_pairs``."""

    PATH_FIELDS: ClassVar[tuple[str, ...]] = ("table", "train", "test", "images_root")
    #: the key naming the column of image paths
    PATH_KEY: ClassVar[str] = "path_column"
    KIND: ClassVar[str] = "table"

    table: str | None = None
    train: str | None = None
    test: str | None = None
    images_root: str | None = None

    def column_needs(self) -> list[tuple[str, str | None]]:
        """(key, column) pairs every table must have."""
        return [(self.PATH_KEY, getattr(self, self.PATH_KEY)), *self.label_needs()]

    def tables(self) -> dict[str, Path]:
        keys = ("train", "test") if self.split_by == "files" else ("table",)
        return {key: Path(getattr(self, key)) for key in keys}

    def check(self) -> None:
        super().check()
        for key in ("train", "test") if self.split_by == "files" else ("table",):
            self.require(key, "with split_by: files" if self.split_by == "files" else "(the table of image paths)")
            path = Path(getattr(self, key))
            if not path.is_file() or path.suffix.lower() not in TABLE_SUFFIXES:
                raise ReaderSpecError(key, f"must be a table file ({', '.join(TABLE_SUFFIXES)}), got {path}")
        if self.images_root is not None and not Path(self.images_root).is_dir():
            raise ReaderSpecError("images_root", f"must be a folder, got the file {self.images_root}")
        for key, path in self.tables().items():
            self.check_columns(str(path), self.table_header(key, path), self.column_needs())

    def rows(self) -> TableRows:
        import pandas as pd

        tables = self.tables()
        sources = list(tables.values())
        parts = []
        for path in sources:
            part = read_table(path)
            self.check_columns(str(path), [str(c) for c in part.columns], self.column_needs())
            parts.append(part)
        table = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        source = np.concatenate([np.full(len(p), k, dtype=np.int64) for k, p in enumerate(parts)])
        index = np.concatenate([np.arange(len(p), dtype=np.int64) for p in parts])
        if self.split_by == "files":
            splits = {"train": np.flatnonzero(source == 0), "test": np.flatnonzero(source == 1)}
        else:
            values = table[self.split_column].tolist() if self.split_by == "column" else None
            splits = {s: self.split_rows(len(table), s, values) for s in ("train", "test")}
        for split, idx in splits.items():
            if not len(idx):
                key, why = {
                    "files": (split, f"{tables.get(split)} has no rows"),
                    "column": (
                        f"{split}_value",
                        f"no row of {sources[0]} has {self.split_column} == {getattr(self, f'{split}_value')!r}",
                    ),
                    "ratio": ("test_fraction", f"leaves the {split} split of {len(table)} rows empty"),
                }[self.split_by]
                raise ReaderSpecError(key, why)
        return TableRows(table, sources, source, index, splits)

    def table_labels(self, rows: TableRows) -> torch.Tensor:
        try:
            return self.labels(rows.table)
        except ValueError as err:
            key = "label_columns" if self.label_type == "multilabel" and self.label_columns else "label_column"
            raise ReaderSpecError(key, f"{', '.join(map(str, rows.sources))}: {err}") from None

    def row_problem(self, rows: TableRows, i: int) -> str | None:
        """What makes table row ``i`` corrupt besides its image (none here; an empty text for image-text pairs)."""
        return None

    def image_paths(self, rows: TableRows, idx: np.ndarray, log: CorruptLog) -> tuple[list[Path], np.ndarray]:
        """The image file of each row ``idx``, and the rows kept: an empty cell or a missing file is a corrupt row."""
        column = getattr(self, self.PATH_KEY)
        cells = rows.table[column]
        paths, kept = [], []
        for i in idx:
            table = rows.sources[rows.source[i]]
            root = Path(self.images_root) if self.images_root else table.parent
            text = cell_text(cells.iloc[i])
            path = Path(text).expanduser() if text else None
            path = path if path is None or path.is_absolute() else root / path
            problem = self.row_problem(rows, int(i))
            if path is None or not path.is_file() or problem is not None:
                line, unit = row_location(table, int(rows.index[i]))
                why = (
                    f"no image path in column {column!r}"
                    if path is None
                    else problem
                    if problem is not None
                    else f"image file {path} does not exist"
                )
                log.add(CorruptDataError(table, why, line, unit))
                continue
            paths.append(path)
            kept.append(i)
        return paths, np.asarray(kept, dtype=np.int64)

    def load(self, split: str, cache_dir: Path, on_corrupt: str = "error") -> ImageDataset:
        check_split(split)
        rows = self.rows()
        labels = self.table_labels(rows)
        missing = self.missing_labels(rows.table)
        where = [rows.name(i) for i in np.flatnonzero(missing)[:3]]
        self.refuse_unlabelled(
            int(missing.sum()),
            f"rows of {', '.join(map(str, rows.sources))} have an empty {self.label_column or 'label'} cell",
            where,
            "fill in their labels",
        )
        log = CorruptLog(self.tables().get(split, rows.sources[0]).stem, split, on_corrupt)
        left = LeftOut(log.dataset, split)
        idx = rows.splits[split]
        left.add(EMPTY_LABEL, int(missing[idx].sum()))
        if self.split_by == "column":
            left.add(self.neither_reason("rows"), len(self.unsplit_rows(rows.table[self.split_column].tolist())))
        idx = idx[~missing[idx]]
        paths, kept = self.image_paths(rows, idx, log)
        left.add(CORRUPT_ROWS, len(idx) - len(kept))
        extra = [x[kept] for x in self.extra_inputs(rows)]
        return self.image_split(
            self.KIND, split, paths, labels[torch.from_numpy(kept)], cache_dir, log, extra, left=left
        )

    def extra_inputs(self, rows: TableRows) -> list[np.ndarray]:
        """Inputs served after the image, one row per table row (none here; token ids for image-text pairs)."""
        return []


@dataclasses.dataclass
class ImageTable(TableImages):
    TARGET: ClassVar[str] = "dabs_rq.data.generic.images.image_table"

    path_column: str = "path"


def image_table(split: str, cache_dir: Path, on_corrupt: str = "error", **settings) -> ImageDataset:
    """Dataset of one split: ``((float32 [C, H, W] in [0, 1],), label)`` (see the module docstring)."""
    return ImageTable.from_mapping(settings).load(split, Path(cache_dir), on_corrupt)
