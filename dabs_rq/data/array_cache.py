"""Disk cache of preprocessed examples as ``.npy`` memory maps, so loading is never the bottleneck.

Decoding and preprocessing (audio -> spectrogram, image -> resized tensor, text -> ids)
happens once per (dataset, split, preprocessing settings); afterwards examples are read
from a memory-mapped array, a batch at a time. A sample that cannot be decoded is never stored
as if it were one (:func:`checked_memmap_cache`), and a cache file is only ever read as a plain
array: pickled objects are refused (:func:`load_array`). Every cache file name holds
:func:`cache_key` of the settings and of :func:`source_identity` of the files it is built from,
so a cache never outlives its data: another copy of a dataset (``data_root`` pointing elsewhere)
or a replaced file gets a cache of its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from dabs_rq.data.storage import CorruptDataError
from dabs_rq.hashing import digest
from dabs_rq.io import atomic_path, write_json_atomic

log = logging.getLogger(__name__)


def cache_key(**settings: Any) -> str:
    """A short stable digest of the preprocessing settings (part of a cache file name)."""
    return digest(settings)


#: index and label tables smaller than this are keyed by a hash of their contents, bigger ones by size and mtime
SMALL_TABLE_BYTES = 1 << 20


def source_identity(
    root: str | Path | None, files: Iterable[str | Path] = (), tables: Iterable[str | Path] = ()
) -> str:
    """A short digest of what a cache is built from (part of its key): the data root and each source file.

    ``root`` (the dataset's data root) enters resolved (symlinks followed), so two copies of a
    dataset never share a cache; ``None`` only for readers without one (generic readers, whose
    paths are absolute). Each file enters in order with its path (relative to ``root`` when
    under it, else absolute, its folder resolved) and:

    * ``files`` (images, audio, recordings, big json: many or large files): size and
      ``mtime_ns``, from one ``stat`` each; nothing is read;
    * ``tables`` (index and label files): a SHA-1 of the contents when smaller than
      :data:`SMALL_TABLE_BYTES` (a copy or an in-place rewrite within one mtime tick is still
      told apart, and an untouched copy made with new mtimes is not), else size and ``mtime_ns``.

    A missing file is recorded as missing (not an error here: the reader reports it when it
    opens the file).
    """
    sha = hashlib.sha1()
    base = os.path.abspath(root) if root is not None else None
    sha.update(f"root\0{os.path.realpath(base) if base is not None else ''}\n".encode())
    prefix = base.rstrip(os.sep) + os.sep if base is not None else None
    folders: dict[str, str] = {}  # each folder resolved once (realpath costs a syscall per path component)

    def name(path: str) -> str:
        if prefix is not None and path.startswith(prefix):
            return path[len(prefix) :]
        folder, leaf = os.path.split(path)
        if folder not in folders:
            folders[folder] = os.path.realpath(folder)
        return os.path.join(folders[folder], leaf)

    for kind, paths in (("file", files), ("table", tables)):
        for path in paths:
            path = os.path.abspath(path)
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                sha.update(f"{kind}\0{name(path)}\0missing\n".encode())
                continue
            if kind == "table" and stat.S_ISREG(st.st_mode) and st.st_size < SMALL_TABLE_BYTES:
                with open(path, "rb") as f:
                    stamp = hashlib.sha1(f.read()).hexdigest()
            else:
                stamp = f"{st.st_size}\0{st.st_mtime_ns}"
            sha.update(f"{kind}\0{name(path)}\0{stamp}\n".encode())
    return sha.hexdigest()[:16]


def load_array(path: Path, mmap: bool = True) -> np.ndarray | None:
    """The plain array saved at ``path`` (memory-mapped), or None when it is missing or unusable.

    Caches only ever hold plain numeric arrays: pickled Python objects are refused (never
    unpickled), and a truncated or garbled file is treated as absent (with a warning), so the
    caller rebuilds it.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        if not isinstance(array, np.ndarray) or array.dtype.hasobject:
            raise ValueError("not a plain array")
        return array
    except (ValueError, OSError, EOFError) as err:
        log.warning("ignoring unusable cache file %s (%s); it will be rebuilt", path, " ".join(str(err).split()))
        return None


def corrupt_record_path(path: Path) -> Path:
    """Where a cache records the rows it holds no sample for (``<name>.corrupt.json`` beside it)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.corrupt.json")


def _read_corrupt_record(path: Path, count: int, shape: Sequence[int]) -> dict[int, CorruptDataError] | None:
    """The corrupt rows recorded for the cache at ``path``; None if the record does not belong to it."""
    record = corrupt_record_path(path)
    if not record.exists():
        return {}  # built clean
    try:
        data = json.loads(record.read_text())
        if data["count"] != count or list(data["shape"]) != list(shape):
            return None
        return {int(i): CorruptDataError.from_record(r) for i, r in data["rows"]}
    except (ValueError, KeyError, TypeError) as err:
        log.warning("ignoring unreadable corrupt-row record %s (%s)", record, err)
        return None


def checked_memmap_cache(
    path: Path,
    count: int,
    shape: Sequence[int],
    dtype: Any,
    fill: Callable[[int], np.ndarray],
    desc: str = "preprocessing",
    skip_corrupt: bool = False,
) -> tuple[np.ndarray, dict[int, CorruptDataError]]:
    """:func:`memmap_cache` that also handles corrupt samples: ``(array, {row: error})``.

    ``fill(i)`` raises :class:`CorruptDataError` for a sample it cannot decode. Without
    ``skip_corrupt`` that error propagates and nothing is stored. With it, the row is left
    zero and recorded in ``<name>.corrupt.json`` (written before the cache itself appears), so
    a zero row is never mistaken for a sample: every later load returns the same record, and
    a load without ``skip_corrupt`` raises the first recorded error.
    """
    path = Path(path)
    array = load_array(path)
    if array is not None and array.shape == (count, *shape):
        corrupt = _read_corrupt_record(path, count, shape)
        if corrupt is not None:
            if corrupt and not skip_corrupt:
                first = corrupt[min(corrupt)]
                raise CorruptDataError(
                    first.path,
                    f"{first.reason} (recorded when {path} was built; fixing the file builds a new cache)",
                    first.line,
                )
            return array, corrupt
    corrupt = {}
    with atomic_path(path, suffix=".npy") as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(count, *shape))
        for i in tqdm(range(count), desc=desc, leave=False, disable=count < 1000):
            try:
                array[i] = fill(i)
            except CorruptDataError as err:
                if not skip_corrupt:
                    raise
                array[i] = 0
                corrupt[i] = err
        array.flush()
        del array
        record = corrupt_record_path(path)
        if corrupt:
            write_json_atomic(
                record,
                {
                    "count": count,
                    "shape": list(shape),
                    "rows": [[i, e.to_record()] for i, e in sorted(corrupt.items())],
                },
                indent=None,
            )
        elif record.exists():
            record.unlink()
    return np.load(path, mmap_mode="r"), corrupt


def memmap_cache(
    path: Path,
    count: int,
    shape: Sequence[int],
    dtype: Any,
    fill: Callable[[int], np.ndarray],
    desc: str = "preprocessing",
) -> np.ndarray:
    """``[count, *shape]`` array at ``path``, built once with ``fill(i)`` per row (atomically), then memory-mapped.

    A :class:`CorruptDataError` from ``fill`` stops the build (see :func:`checked_memmap_cache`
    to skip such rows instead).
    """
    return checked_memmap_cache(path, count, shape, dtype, fill, desc)[0]


class ArrayDataset(Dataset):
    """Items ``((inputs[0][i], ...), labels[i])`` from (memory-mapped) arrays; batch indexing supported."""

    supports_batch_indexing = True

    def __init__(
        self,
        inputs: Sequence[np.ndarray],
        labels: np.ndarray | torch.Tensor,
        dtypes: Sequence[torch.dtype] | None = None,
    ) -> None:
        self.inputs = list(inputs)
        self.labels = torch.as_tensor(np.asarray(labels))
        self.dtypes = list(dtypes) if dtypes is not None else [torch.float32] * len(self.inputs)
        if any(len(x) != len(self.labels) for x in self.inputs):
            raise ValueError("every input array needs one row per label")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | list[int]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        rows = tuple(torch.as_tensor(own_memory(x[index], x)).to(dt) for x, dt in zip(self.inputs, self.dtypes))
        return rows, self.labels[index]


def own_memory(rows: np.ndarray, source: np.ndarray) -> np.ndarray:
    """``rows`` in memory of its own: a tensor must never share memory with a read-only memory-mapped
    cache (writing to it, e.g. an in-place augmentation, would crash the process). Fancy indexing
    (a batch) already copies; a single row is a view and is copied."""
    return np.array(rows) if np.may_share_memory(rows, source) else np.ascontiguousarray(rows)
