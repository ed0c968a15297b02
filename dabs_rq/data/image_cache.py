"""The uint8 image cache every image reader shares (natural images, chest X-rays, captioned images).

Each distinct image is opened as RGB (DABS's first step everywhere), put through its reader's
DABS transform once -- PIL to PIL, everything before ``ToTensor`` -- and stored as a uint8
``[C, H, W]`` row of a memory map (:func:`dabs_rq.data.array_cache.memmap_cache`). Items are
read back as float32 ``row / 255``, which is bit-identical to ``ToTensor`` on the transformed
image, so the cache costs a quarter of float32's disk space and changes no value.

What the readers need beyond that, all here in one place:

* one-channel storage (X-rays, whose RGB channels are equal) repeated to three channels on read;
* an example -> image row mapping (VQA: several questions share one image);
* extra per-example inputs served next to the image (token ids);
* decoding on a thread pool when a cache is first built, and batch indexing afterwards;
* an on-the-fly variant that decodes per item instead of caching (ImageNet's ~200 GB);
* :func:`cache_file`, where a cache lives, keyed by everything that shapes its pixels: the
  readers pass :func:`dabs_rq.data.array_cache.source_identity` of the image files (resolved
  data root, each file's name, size and mtime), so another copy of the data or a replaced
  image never reads a stale cache, and :func:`list_digest` of labels or crop boxes where they matter;
* corrupt or truncated image files: :func:`open_rgb` raises :class:`CorruptDataError` naming
  the file; the split's :class:`CorruptLog` then stops the run or leaves the image (and every
  example using it) out, and the cache records which rows hold no image, so a zero row is
  never served as a sample.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from PIL import Image
from torch.utils.data import Dataset

from dabs_rq.cores import usable_cores
from dabs_rq.data.array_cache import cache_key, checked_memmap_cache
from dabs_rq.data.storage import CorruptDataError, CorruptLog
from dabs_rq.io import write_json_atomic

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]
Transform = Callable[[Image.Image], Image.Image]


# --------------------------------------------------------------------------- image sources

#: what PIL raises for a file it cannot decode (truncated, garbled, not an image); not "missing"
DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)
#: file-system errors: the file is not there (or not readable), which is not corruption
NOT_CORRUPT = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def open_rgb(path: str | Path, box: Box | None = None) -> Image.Image:
    """The image at ``path`` as RGB (CMYK, greyscale and RGBA files exist in the datasets), cropped to ``box``.

    Decoded completely (a truncated file is an error, never a partly grey image):
    :class:`CorruptDataError` names the file and what PIL found wrong.
    """
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except NOT_CORRUPT:
        raise
    except DECODE_ERRORS as err:
        raise CorruptDataError(path, f"cannot decode image ({type(err).__name__}: {err})") from err
    return image.crop(box) if box is not None else image


# Sources and decoders are small classes rather than closures so that an on-the-fly dataset
# can be sent to DataLoader worker processes.


@dataclass
class FileImages:
    """Image ``i`` = file ``paths[i]`` as RGB, cropped to ``boxes[i]`` when boxes are given (Aircraft)."""

    paths: Sequence[str | Path]
    boxes: Sequence[Box] | None = None

    def __call__(self, i: int) -> Image.Image:
        return open_rgb(self.paths[i], self.boxes[i] if self.boxes is not None else None)


def to_chw(image: Image.Image) -> np.ndarray:
    """A PIL image as a uint8 ``[C, H, W]`` array (``C = 1`` for mode ``L``), as ``PILToTensor`` lays it out."""
    array = np.array(image, dtype=np.uint8)  # a writable copy
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


@dataclass
class DecodedImages:
    """Row ``i`` = ``to_chw(transform(open_image(i)))`` for ``i < count``, decoded when asked for."""

    open_image: Callable[[int], Image.Image]
    transform: Transform
    count: int

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> np.ndarray:
        return to_chw(self.transform(self.open_image(int(i))))


# --------------------------------------------------------------------------- building the cache


class ParallelRows:
    """A ``fill(i)`` for :func:`memmap_cache` that decodes rows on a thread pool, a chunk at a time.

    PIL releases the GIL while decoding, converting and resizing, so threads give a
    near-linear speed-up when a cache is first built (ImageNet: 1.3 M JPEGs) without sending
    the image source to worker processes. The pool starts on the first call only (nothing is
    decoded when the cache exists); ``workers`` of 0 or 1 decode in the calling thread. A
    :class:`CorruptDataError` of one row is raised when that row is asked for, not for its chunk.
    """

    def __init__(
        self, load: Callable[[int], np.ndarray], count: int, workers: int | None = None, chunk: int = 256
    ) -> None:
        self.load, self.count, self.chunk = load, count, chunk
        self.workers = usable_cores() if workers is None else workers
        self._pool: ThreadPoolExecutor | None = None
        self._start, self._rows = 0, []

    def __call__(self, i: int) -> np.ndarray:
        if self.workers <= 1:
            return self.load(i)
        if not self._start <= i < self._start + len(self._rows):
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers)
            self._start = i
            self._rows = list(self._pool.map(self._load_or_error, range(i, min(i + self.chunk, self.count))))
        row = self._rows[i - self._start]
        if isinstance(row, CorruptDataError):
            raise row
        return row

    def _load_or_error(self, i: int) -> np.ndarray | CorruptDataError:
        try:
            return self.load(i)
        except CorruptDataError as err:
            return err

    def __enter__(self) -> ParallelRows:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown()


def list_digest(items: Iterable[Any]) -> str:
    """A short fingerprint of a sample list (file names, with labels or crop boxes where they matter).

    Part of a cache key, so that another list of images gets another cache. Items are hashed
    one at a time (ImageNet lists 1.3 M files).
    """
    sha = hashlib.sha1()
    for item in items:
        sha.update(repr(item).encode())
        sha.update(b"\n")
    return sha.hexdigest()[:16]


def cache_file(cache_dir: Path, name: str, split: str, **settings: Any) -> Path:
    """Where the image cache of ``name``/``split`` lives: keyed by everything that shapes its pixels.

    ``settings`` (the images' :func:`~dabs_rq.data.array_cache.source_identity`, size, crops,
    ...) go into the file name, so a change builds a new cache instead of reading a stale one.
    """
    key = cache_key(dataset=name, split=split, **settings)
    return Path(cache_dir) / "images" / f"{name}-{split}-{key}.npy"


def cache_images(
    path: Path, images: DecodedImages, shape: Sequence[int], workers: int | None = None, skip_corrupt: bool = False
) -> tuple[np.ndarray, dict[int, CorruptDataError]]:
    """uint8 ``[len(images), *shape]`` memory map of the decoded rows, built once at ``path`` in row order.

    Returns the rows that hold no image (corrupt files, recorded with the cache; only with
    ``skip_corrupt``, else the first corrupt file raises) as ``{row: error}``.
    """
    with ParallelRows(images.__getitem__, len(images), workers) as fill:
        return checked_memmap_cache(
            path,
            len(images),
            tuple(shape),
            np.uint8,
            fill,
            desc=f"decoding images into {Path(path).name}",
            skip_corrupt=skip_corrupt,
        )


def scan_images(
    open_image: Callable[[int], Image.Image], count: int, record: Path | None, workers: int | None = None
) -> dict[int, CorruptDataError]:
    """``{i: error}`` for the images ``open_image(i)`` that do not decode, remembered in the JSON file ``record``.

    What an on-the-fly dataset needs to skip corrupt files: one decoding pass (on ``workers``
    threads), done once; later loads read ``record``.
    """
    if record is not None and Path(record).exists():
        try:
            data = json.loads(Path(record).read_text())
            if data["count"] == count:
                return {int(i): CorruptDataError.from_record(r) for i, r in data["rows"]}
        except (ValueError, KeyError, TypeError) as err:
            log.warning("ignoring unreadable image scan record %s (%s)", record, err)

    def check(i: int) -> CorruptDataError | None:
        try:
            open_image(i)
        except CorruptDataError as err:
            return err
        return None

    workers = usable_cores() if workers is None else workers
    if workers <= 1:
        found = [check(i) for i in range(count)]
    else:
        with ThreadPoolExecutor(workers) as pool:
            found = list(pool.map(check, range(count), chunksize=64))
    corrupt = {i: err for i, err in enumerate(found) if err is not None}
    if record is not None:
        rows = [[i, e.to_record()] for i, e in sorted(corrupt.items())]
        write_json_atomic(record, {"count": count, "rows": rows}, indent=None)
    return corrupt


# --------------------------------------------------------------------------- datasets


class ImageDataset(Dataset):
    """Items ``((image, *extra), label)`` with ``image = images[rows[i]] / 255`` as float32 ``[channels, H, W]``.

    ``images`` holds uint8 ``[C, H, W]`` rows (a memory map); ``rows`` maps examples to
    images (default: row ``i``); one-channel rows are repeated to ``channels``; ``extra``
    arrays (e.g. token ids) have one row per example. Batch indexing supported.
    """

    supports_batch_indexing = True

    def __init__(
        self,
        images: np.ndarray | DecodedImages,
        labels: ArrayLike,
        rows: ArrayLike | None = None,
        extra: Sequence[ArrayLike] = (),
        channels: int = 3,
    ) -> None:
        self.images, self.channels = images, int(channels)
        self.labels = torch.as_tensor(np.asarray(labels))
        self.rows = np.arange(len(self.labels)) if rows is None else np.asarray(rows)
        self.extra = [torch.as_tensor(np.asarray(x)) for x in extra]
        if len(self.rows) != len(self.labels) or any(len(x) != len(self.labels) for x in self.extra):
            raise ValueError("rows and every extra input need one entry per label")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | list[int]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        pixels = self.images[self.rows[index]]  # one row of a read-only memory map is a view: copy it
        image = torch.from_numpy(pixels if pixels.flags.writeable else np.array(pixels)).float().div_(255)
        if image.shape[-3] != self.channels:
            image = image.expand(*image.shape[:-3], self.channels, *image.shape[-2:]).contiguous()
        return (image, *(x[index] for x in self.extra)), self.labels[index]


class LazyImageDataset(ImageDataset):
    """The same items, decoded one at a time when read (``images`` is a :class:`DecodedImages`): no disk cache.

    Without batch indexing, so that loader worker processes decode items in parallel.
    """

    supports_batch_indexing = False


def without_rows(
    bad: Iterable[int], labels: ArrayLike, rows: ArrayLike | None, extra: Sequence[ArrayLike]
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """``(labels, rows, extra)`` of the examples whose image row is not in ``bad``."""
    labels = np.asarray(labels)
    rows = np.arange(len(labels)) if rows is None else np.asarray(rows)
    keep = ~np.isin(rows, np.fromiter(bad, dtype=np.int64))
    return labels[keep], rows[keep], [np.asarray(x)[keep] for x in extra]


def image_dataset(
    open_image: Callable[[int], Image.Image],
    count: int,
    transform: Transform,
    labels: ArrayLike,
    *,
    cache: Path | None,
    shape: Sequence[int],
    rows: ArrayLike | None = None,
    extra: Sequence[ArrayLike] = (),
    channels: int = 3,
    workers: int | None = None,
    corrupt: CorruptLog | None = None,
    scan_record: Path | None = None,
) -> ImageDataset:
    """The dataset of ``count`` images ``open_image(i)`` through ``transform``, cached at ``cache`` as uint8.

    ``shape`` is a stored row ``[C, H, W]`` (``C = 1`` for a transform ending in grayscale);
    ``rows``, ``extra`` and ``channels`` as in :class:`ImageDataset`; ``workers`` threads
    build the cache (default: all CPUs). ``cache=None`` decodes on the fly instead.

    Corrupt image files go to the split's ``corrupt`` log (default: stop at the first, naming
    it). When it skips them, examples using a corrupt image are left out and the log reports
    its one summary line. On the fly, skipping needs one decoding pass to know the length,
    remembered in ``scan_record``; stopping needs none (the item that meets the file raises).
    """
    images = DecodedImages(open_image, transform, count)
    skip = corrupt is not None and corrupt.skip
    if cache is None:
        bad = scan_images(open_image, count, scan_record, workers) if skip else {}
        array: np.ndarray | DecodedImages = images
    else:
        array, bad = cache_images(cache, images, shape, workers, skip_corrupt=skip)
    if bad:
        labels, rows, extra = without_rows(bad, labels, rows, extra)
        corrupt.extend(bad[i] for i in sorted(bad))
    dataset = (LazyImageDataset if cache is None else ImageDataset)(array, labels, rows, extra, channels)
    if corrupt is not None:
        corrupt.report(kept=len(dataset))
    return dataset
