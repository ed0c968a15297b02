"""Chest X-rays as DABS reads them: CheXpert (pretraining and transfer) and NIH ChestX-ray8.

Both give ``([3, 224, 224] float32 in [0, 1],)`` -> multi-hot ``long`` labels, with DABS's
transform ``convert('RGB')`` -> ``Resize((224, 224))`` (aspect ratio not kept) ->
``ToTensor()`` and no normalisation.

Decoded images are cached once per split in the shared ``uint8`` image cache
(:mod:`dabs_rq.data.image_cache`; ToTensor's ``/255`` is applied when a batch is read,
which gives the same floats). X-rays are grayscale, so one channel is stored and repeated
to three on reading: for an image whose RGB channels are equal (every CheXpert/NIH image)
this is exactly DABS's tensor, at a third of the disk space. ``decode_workers`` threads
decode a split when its cache is first built (default: all CPUs). A cache is keyed by the
resolved data root and each image file's name, size and mtime (one ``stat`` per image), so
another copy of the data, or a replaced image, builds a new one.

* **CheXpert** (``CheXpert-v1.0-small`` layout): ``train.csv`` / ``valid.csv`` list the
  images (``Path`` column, relative to the dataset folder) and 14 observation columns;
  DABS keeps the five competition tasks, blank -> 0 and uncertain (-1) -> 0 ("U-Zeros").
* **ChestX-ray8**: ``images/*.png`` and ``metadata.csv`` (NIH ``Data_Entry_2017.csv``); the
  8 original pathologies are found by substring match in ``Finding Labels``; DABS's split is
  a ``RandomState(42)`` shuffle of the PNG names, first 90 % train (official lists and
  patient grouping ignored).

Both readers take ``on_corrupt`` (``"error"`` | ``"skip"``): a corrupt or truncated image, or a
malformed CSV line (wrong number of fields, no path, a label that is not blank / 1.0 / 0.0 /
-1.0, no findings), stops the run naming the file (and line), or is left out and counted in one
summary line per split. A CSV that lacks a needed column always stops the run. Every split
Dataset carries ``excluded`` (``{reason: count}``, stored in the record): the lines and images
skipped as corrupt.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from PIL import Image
from torchvision import transforms

from dabs_rq.data import image_cache
from dabs_rq.data.array_cache import source_identity
from dabs_rq.data.image_cache import FileImages, ImageDataset
from dabs_rq.data.splits import check_split
from dabs_rq.data.storage import CORRUPT, CorruptDataError, CorruptLog, LeftOut

CHEXPERT_TASKS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
XRAY8_PATHOLOGIES = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
)


def to_gray(image: Image.Image) -> Image.Image:
    """RGB -> L; exact (L = R) when the three channels are equal, as in X-rays."""
    return image.convert("L")


def xray_transform(size: Sequence[int] = (224, 224)) -> transforms.Compose:
    """DABS's X-ray transform up to ``ToTensor``, after the cache's ``convert("RGB")``, producing one channel."""
    return transforms.Compose([to_gray, transforms.Resize(tuple(size))])


def xray_dataset(
    files: Sequence[Path],
    labels: ArrayLike,
    cache: Path,
    image_size: Sequence[int],
    workers: int | None = None,
    corrupt: CorruptLog | None = None,
) -> ImageDataset:
    """X-ray files through :func:`xray_transform` into the shared cache: one channel stored, three served.

    The dataset's ``excluded`` counts the CSV lines and images ``corrupt`` skipped."""
    lines = len(corrupt) if corrupt is not None else 0
    dataset = image_cache.image_dataset(
        FileImages(files),
        len(files),
        xray_transform(image_size),
        labels,
        cache=cache,
        shape=(1, *image_size),
        workers=workers,
        corrupt=corrupt,
    )
    left = LeftOut(corrupt.dataset, corrupt.split) if corrupt is not None else LeftOut(Path(cache).stem, "")
    left.add(f"lines and images {CORRUPT}", lines + len(files) - len(dataset))
    return left.attach(dataset)


#: cells pandas reads as missing (CheXpert leaves unmentioned observations blank)
BLANK = {"", "NA", "N/A", "n/a", "NaN", "nan", "-NaN", "-nan", "NULL", "null", "None", "<NA>", "#N/A"}


def csv_records(path: Path, needed: Sequence[str]) -> Iterator[tuple[int, dict[str, str] | CorruptDataError, str]]:
    """``(line, {column: cell} of the needed columns, its first needed cell)`` per record of a CSV with a header.

    A record with another number of fields than the header (e.g. the last line of a
    truncated file) comes as a :class:`CorruptDataError` instead of the cells; a missing
    needed column or a file that is not UTF-8 raises one.
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            missing = [c for c in needed if header is None or c not in header]
            if missing:
                raise CorruptDataError(path, f"no column {', '.join(map(repr, missing))} in the header")
            where = [header.index(c) for c in needed]
            for record in reader:
                if not record:
                    continue  # blank line
                if len(record) != len(header):
                    error = CorruptDataError(path, f"expected {len(header)} fields, got {len(record)}", reader.line_num)
                    yield reader.line_num, error, record[where[0]] if len(record) > where[0] else ""
                else:
                    yield reader.line_num, {c: record[i] for c, i in zip(needed, where)}, record[where[0]]
    except (UnicodeDecodeError, csv.Error) as err:
        raise CorruptDataError(path, f"not a UTF-8 CSV file ({err})") from err


def read_chexpert_csv(path: Path, tasks: Sequence[str], corrupt: CorruptLog) -> pd.DataFrame:
    """``Path`` and ``tasks`` columns of a CheXpert CSV (labels as float, blank = NaN); bad lines go to ``corrupt``."""
    paths, values = [], []
    for line, record, _ in csv_records(path, ["Path", *tasks]):
        try:
            if isinstance(record, CorruptDataError):
                raise record
            if not record["Path"]:
                raise CorruptDataError(path, "empty Path", line)
            row = []
            for task in tasks:
                cell = record[task].strip()
                value = math.nan if cell in BLANK else _float(cell)
                if not (math.isnan(value) or value in (1.0, 0.0, -1.0)):
                    raise CorruptDataError(path, f"{task} is {record[task]!r}, expected blank, 1.0, 0.0 or -1.0", line)
                row.append(value)
        except CorruptDataError as err:
            corrupt.add(err)
            continue
        paths.append(record["Path"])
        values.append(row)
    table = pd.DataFrame(np.array(values, dtype=np.float64).reshape(-1, len(tasks)), columns=list(tasks))
    table.insert(0, "Path", paths)
    return table


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.inf  # rejected by the caller with the cell's text


def chexpert_labels(table: pd.DataFrame, tasks: Sequence[str], uncertain: int = 0) -> np.ndarray:
    """``[N, len(tasks)]`` multi-hot labels: blank -> 0, uncertain (-1) -> ``uncertain``."""
    values = table[list(tasks)].fillna(0).to_numpy(np.float64)
    return np.where(values < 0, uncertain, values).astype(np.int64)


def chexpert(
    split: str,
    cache_dir: Path,
    root: Path,
    download: bool = False,
    folder: str = "CheXpert-v1.0-small",
    tasks: Sequence[str] = CHEXPERT_TASKS,
    uncertain: int = 0,
    image_size: Sequence[int] = (224, 224),
    decode_workers: int | None = None,
    on_corrupt: str = "error",
) -> ImageDataset:
    """CheXpert ``train.csv`` (train) or ``valid.csv`` (test): X-ray -> 5 competition labels.

    ``download`` is accepted for the common reader signature; CheXpert needs registration,
    so the data is always placed by hand (see the YAML's ``manual_steps``).
    """
    check_split(split)
    corrupt = CorruptLog("chexpert", split, on_corrupt)
    tasks = [str(t) for t in tasks]
    table = read_chexpert_csv(Path(root) / folder / ("train.csv" if split == "train" else "valid.csv"), tasks, corrupt)
    files = [Path(root) / p for p in table["Path"]]
    cache = image_cache.cache_file(
        cache_dir, "chexpert", split, folder=folder, size=list(image_size), files=source_identity(root, files=files)
    )
    return xray_dataset(files, chexpert_labels(table, tasks, uncertain), cache, image_size, decode_workers, corrupt)


def xray8_split(names: Sequence[str], split: str, train_fraction: float = 0.9, seed: int = 42) -> list[str]:
    """DABS's split: shuffle the names with ``RandomState(seed)``; the first ``int(n * 0.9)`` train."""
    shuffled = np.array(names)
    np.random.RandomState(seed).shuffle(shuffled)
    cut = int(len(shuffled) * train_fraction)
    return list(shuffled[:cut] if split == "train" else shuffled[cut:])


def xray8_labels(findings: pd.Series, pathologies: Sequence[str]) -> np.ndarray:
    """``[N, len(pathologies)]`` multi-hot: pathology name is a substring of ``Finding Labels`` (DABS)."""
    return np.stack([findings.str.contains(p, regex=False).to_numpy() for p in pathologies], axis=1).astype(np.int64)


def read_xray8_findings(
    path: Path, skip: bool
) -> tuple[dict[str, str], dict[str, CorruptDataError], list[CorruptDataError]]:
    """``Finding Labels`` of every image in NIH's metadata CSV (first line of an image wins).

    Also returns the malformed lines (wrong field count, no findings): ``{image: error}`` for
    those whose image name is readable, and a list of the others. Without ``skip`` the first
    one raises.
    """
    findings: dict[str, str] = {}
    named: dict[str, CorruptDataError] = {}
    unnamed: list[CorruptDataError] = []
    for line, record, first in csv_records(path, ["Image Index", "Finding Labels"]):
        if not isinstance(record, CorruptDataError):
            if record["Finding Labels"].strip():
                findings.setdefault(record["Image Index"], record["Finding Labels"])
                continue
            record = CorruptDataError(path, f"no Finding Labels for {record['Image Index']}", line)
        if not skip:
            raise record
        name = first.strip()
        if name.endswith(".png"):
            named.setdefault(name, record)
        else:
            unnamed.append(record)
    return findings, {n: e for n, e in named.items() if n not in findings}, unnamed


def chestxray8(
    split: str,
    cache_dir: Path,
    root: Path,
    download: bool = False,
    pathologies: Sequence[str] = XRAY8_PATHOLOGIES,
    train_fraction: float = 0.9,
    split_seed: int = 42,
    sort_files: bool = True,
    image_size: Sequence[int] = (224, 224),
    decode_workers: int | None = None,
    on_corrupt: str = "error",
) -> ImageDataset:
    """ChestX-ray8 ``images/*.png`` -> 8 pathology labels, DABS's seeded 90/10 split.

    ``sort_files`` sorts the names before shuffling (reproducible); ``False`` keeps
    ``os.listdir`` order as DABS does, which depends on the filesystem. ``download`` is
    accepted for the common reader signature; the metadata CSV must be fetched by hand.
    """
    check_split(split)
    corrupt = CorruptLog("xray8", split, on_corrupt)
    names = [n for n in os.listdir(Path(root) / "images") if n.endswith(".png")]
    names = xray8_split(sorted(names) if sort_files else names, split, train_fraction, split_seed)
    known, malformed, unnamed = read_xray8_findings(Path(root) / "metadata.csv", corrupt.skip)
    corrupt.extend(unnamed)
    corrupt.extend(malformed[n] for n in names if n in malformed)
    names = [n for n in names if n not in malformed]
    findings = pd.Series(
        [known.get(n) for n in names], index=pd.Index(names, name="Image Index"), dtype=object, name="Finding Labels"
    )
    if findings.isna().any():
        missing = findings.index[findings.isna()]
        raise ValueError(
            f"{len(missing)} images of {Path(root) / 'images'} are not in metadata.csv "
            f"(e.g. {missing[0]}): is metadata.csv the NIH Data_Entry_2017 file?"
        )
    files = [Path(root) / "images" / n for n in names]
    cache = image_cache.cache_file(
        cache_dir, "xray8", split, size=list(image_size), files=source_identity(root, files=files)
    )
    return xray_dataset(files, xray8_labels(findings, pathologies), cache, image_size, decode_workers, corrupt)
