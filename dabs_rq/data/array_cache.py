"""Disk cache of preprocessed examples as ``.npy`` memory maps, so loading is never the bottleneck.

Decoding and preprocessing (audio -> spectrogram, image -> resized tensor, text -> ids)
happens once per (dataset, split, preprocessing settings); afterwards examples are read
from a memory-mapped array, a batch at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm


def cache_key(**settings: Any) -> str:
    """A short stable digest of the preprocessing settings (part of a cache file name)."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def memmap_cache(path: Path, count: int, shape: Sequence[int], dtype: Any, fill: Callable[[int], np.ndarray],
                 desc: str = "preprocessing") -> np.ndarray:
    """``[count, *shape]`` array at ``path``, built once with ``fill(i)`` per row (atomically), then memory-mapped."""
    path = Path(path)
    if path.exists():
        array = np.load(path, mmap_mode="r")
        if array.shape == (count, *shape):
            return array
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
    try:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(count, *shape))
        for i in tqdm(range(count), desc=desc, leave=False, disable=count < 1000):
            array[i] = fill(i)
        array.flush()
        del array
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return np.load(path, mmap_mode="r")


class ArrayDataset(Dataset):
    """Items ``((inputs[0][i], ...), labels[i])`` from (memory-mapped) arrays; batch indexing supported."""

    supports_batch_indexing = True

    def __init__(self, inputs: Sequence[np.ndarray], labels: np.ndarray | torch.Tensor,
                 dtypes: Sequence[torch.dtype] | None = None) -> None:
        self.inputs = list(inputs)
        self.labels = torch.as_tensor(np.asarray(labels))
        self.dtypes = list(dtypes) if dtypes is not None else [torch.float32] * len(self.inputs)
        if any(len(x) != len(self.labels) for x in self.inputs):
            raise ValueError("every input array needs one row per label")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | list[int]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        rows = tuple(torch.as_tensor(np.ascontiguousarray(x[index])).to(dt) for x, dt in zip(self.inputs, self.dtypes))
        return rows, self.labels[index]
