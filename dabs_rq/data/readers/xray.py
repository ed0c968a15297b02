"""Chest X-rays as DABS reads them: CheXpert (pretraining and transfer) and NIH ChestX-ray8.

Both give ``([3, 224, 224] float32 in [0, 1],)`` -> multi-hot ``long`` labels, with DABS's
transform ``convert('RGB')`` -> ``Resize((224, 224))`` (aspect ratio not kept) ->
``ToTensor()`` and no normalisation.

Decoded images are cached once per split as a memory-mapped ``uint8`` array (ToTensor's
``/255`` is applied when a batch is read, which gives the same floats). X-rays are
grayscale, so one channel is stored and repeated to three on reading: for an image whose
RGB channels are equal (every CheXpert/NIH image) this is exactly DABS's tensor, at a
third of the disk space. The image cache and dataset here are also used by
:mod:`dabs_rq.data.readers.vqa` (three channels, plus token ids).

* **CheXpert** (``CheXpert-v1.0-small`` layout): ``train.csv`` / ``valid.csv`` list the
  images (``Path`` column, relative to the dataset folder) and 14 observation columns;
  DABS keeps the five competition tasks, blank -> 0 and uncertain (-1) -> 0 ("U-Zeros").
* **ChestX-ray8**: ``images/*.png`` and ``metadata.csv`` (NIH ``Data_Entry_2017.csv``); the
  8 original pathologies are found by substring match in ``Finding Labels``; DABS's split is
  a ``RandomState(42)`` shuffle of the PNG names, first 90 % train (official lists and
  patient grouping ignored).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from dabs_rq.data.array_cache import cache_key, memmap_cache

CHEXPERT_TASKS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
XRAY8_PATHOLOGIES = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                     "Pneumothorax")


def to_rgb(image: Image.Image) -> Image.Image:
    """DABS's first step for every image: `.convert("RGB")`."""
    return image.convert("RGB")


def to_gray(image: Image.Image) -> Image.Image:
    """RGB -> L; exact (L = R) when the three channels are equal, as in X-rays."""
    return image.convert("L")


def xray_transform(size: Sequence[int] = (224, 224)) -> Callable[[Image.Image], Image.Image]:
    """DABS's X-ray transform up to ``ToTensor``, producing one (grayscale) channel."""
    return transforms.Compose([to_rgb, to_gray, transforms.Resize(tuple(size))])


class _DecodedImages(Dataset):
    """Item i: ``transform(open(files[i]))`` as a channel-first ``uint8`` array (for loader workers)."""

    def __init__(self, files: Sequence[Path], transform: Callable[[Image.Image], Image.Image]) -> None:
        self.files, self.transform = list(files), transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> np.ndarray:
        with Image.open(self.files[index]) as image:
            array = np.array(self.transform(image), dtype=np.uint8)  # a writable copy
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def files_digest(files: Sequence[str | Path]) -> str:
    """A digest of a file list (part of a cache key: another list means another cache)."""
    return hashlib.sha1("\n".join(map(str, files)).encode()).hexdigest()[:12]


def cache_images(path: Path, files: Sequence[Path], transform: Callable[[Image.Image], Image.Image],
                 shape: Sequence[int], workers: int | None = None) -> np.ndarray:
    """``uint8 [len(files), *shape]`` memory map of the transformed images, decoded once.

    Decoding runs in ``workers`` DataLoader processes (default: up to 8 when there are many
    images); rows arrive in file order.
    """
    if workers is None:
        workers = min(8, os.cpu_count() or 1) if len(files) >= 2048 else 0
    items = None

    def fill(i: int) -> np.ndarray:
        nonlocal items
        if items is None:  # started lazily: nothing is decoded when the cache exists
            loader = DataLoader(_DecodedImages(files, transform), batch_size=None, num_workers=workers)
            items = iter(loader)
        return np.asarray(next(items))

    return memmap_cache(path, len(files), tuple(shape), np.uint8, fill, desc=f"decoding {Path(path).parent.name}")


class CachedImageDataset(Dataset):
    """Items ``((image, *extra), label)`` with ``image = images[rows[i]] / 255`` as float32.

    ``images`` is a ``uint8 [M, C, H, W]`` (memory-mapped) array; ``rows`` maps examples to
    images (several questions may share one image; default: row i); one-channel images are
    repeated to ``channels``. ``extra`` arrays (e.g. token ids) have one row per example.
    Batch indexing supported.
    """

    supports_batch_indexing = True

    def __init__(self, images: np.ndarray, labels: np.ndarray | torch.Tensor, rows: np.ndarray | None = None,
                 extra: Sequence[np.ndarray | torch.Tensor] = (), channels: int = 3) -> None:
        self.images, self.channels = images, int(channels)
        self.labels = torch.as_tensor(np.asarray(labels))
        self.rows = np.arange(len(self.labels)) if rows is None else np.asarray(rows)
        self.extra = [torch.as_tensor(np.asarray(x)) for x in extra]
        if len(self.rows) != len(self.labels) or any(len(x) != len(self.labels) for x in self.extra):
            raise ValueError("rows and every extra input need one entry per label")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | list[int]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        batch = self.images[self.rows[index]]  # one row of a read-only memory map is a view: copy it
        image = torch.from_numpy(np.array(batch) if not batch.flags.writeable else batch).float().div_(255)
        if image.shape[-3] != self.channels:
            image = image.expand(*image.shape[:-3], self.channels, *image.shape[-2:]).contiguous()
        return (image, *(x[index] for x in self.extra)), self.labels[index]


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")


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
) -> CachedImageDataset:
    """CheXpert ``train.csv`` (train) or ``valid.csv`` (test): X-ray -> 5 competition labels.

    ``download`` is accepted for the common reader signature; CheXpert needs registration,
    so the data is always placed by hand (see the YAML's ``manual_steps``).
    """
    _check_split(split)
    table = pd.read_csv(Path(root) / folder / ("train.csv" if split == "train" else "valid.csv"))
    files = [Path(root) / p for p in table["Path"]]
    key = cache_key(folder=folder, split=split, size=list(image_size), files=files_digest(table["Path"]))
    images = cache_images(Path(cache_dir) / "chexpert" / f"{split}-{key}.npy", files, xray_transform(image_size),
                          (1, *image_size), decode_workers)
    return CachedImageDataset(images, chexpert_labels(table, tasks, uncertain))


def xray8_split(names: Sequence[str], split: str, train_fraction: float = 0.9, seed: int = 42) -> list[str]:
    """DABS's split: shuffle the names with ``RandomState(seed)``; the first ``int(n * 0.9)`` train."""
    shuffled = np.array(names)
    np.random.RandomState(seed).shuffle(shuffled)
    cut = int(len(shuffled) * train_fraction)
    return list(shuffled[:cut] if split == "train" else shuffled[cut:])


def xray8_labels(findings: pd.Series, pathologies: Sequence[str]) -> np.ndarray:
    """``[N, len(pathologies)]`` multi-hot: pathology name is a substring of ``Finding Labels`` (DABS)."""
    return np.stack([findings.str.contains(p, regex=False).to_numpy() for p in pathologies], axis=1).astype(np.int64)


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
) -> CachedImageDataset:
    """ChestX-ray8 ``images/*.png`` -> 8 pathology labels, DABS's seeded 90/10 split.

    ``sort_files`` sorts the names before shuffling (reproducible); ``False`` keeps
    ``os.listdir`` order as DABS does, which depends on the filesystem. ``download`` is
    accepted for the common reader signature; the metadata CSV must be fetched by hand.
    """
    _check_split(split)
    names = [n for n in os.listdir(Path(root) / "images") if n.endswith(".png")]
    names = xray8_split(sorted(names) if sort_files else names, split, train_fraction, split_seed)
    metadata = pd.read_csv(Path(root) / "metadata.csv", usecols=["Image Index", "Finding Labels"])
    findings = metadata.drop_duplicates("Image Index").set_index("Image Index")["Finding Labels"].reindex(names)
    if findings.isna().any():
        missing = findings.index[findings.isna()]
        raise ValueError(f"{len(missing)} images of {Path(root) / 'images'} are not in metadata.csv "
                         f"(e.g. {missing[0]}): is metadata.csv the NIH Data_Entry_2017 file?")
    key = cache_key(split=split, size=list(image_size), files=files_digest(names))
    images = cache_images(Path(cache_dir) / "xray8" / f"{split}-{key}.npy",
                          [Path(root) / "images" / n for n in names], xray_transform(image_size), (1, *image_size),
                          decode_workers)
    return CachedImageDataset(images, xray8_labels(findings, pathologies))
