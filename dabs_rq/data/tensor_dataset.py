"""In-memory dataset of (inputs tuple, label) pairs, the item format every reader returns."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, IterableDataset, RandomSampler, SequentialSampler


class TensorInputsDataset(Dataset):
    """Item i is ``((inputs[0][i], inputs[1][i], ...), labels[i])``.

    Indexing with a list of indices returns the whole batch at once, which
    :func:`make_loader` uses to skip per-sample collation of in-memory data.
    """

    supports_batch_indexing = True

    def __init__(self, inputs: Sequence[Tensor], labels: Tensor) -> None:
        if any(len(x) != len(labels) for x in inputs):
            raise ValueError("every input tensor needs one row per label")
        self.inputs, self.labels = list(inputs), labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | list[int]) -> tuple[tuple[Tensor, ...], Tensor]:
        return tuple(x[index] for x in self.inputs), self.labels[index]


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, drop_last: bool, num_workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """A DataLoader; in-memory datasets are sliced a batch at a time instead of collated sample by sample."""
    workers = dict(num_workers=num_workers, persistent_workers=num_workers > 0, pin_memory=pin_memory)
    if isinstance(dataset, IterableDataset):  # streams (mC4) order and shard themselves
        return DataLoader(dataset, batch_size=batch_size, drop_last=drop_last, **workers)
    if getattr(dataset, "supports_batch_indexing", False):
        order = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
        sampler = BatchSampler(order, batch_size=batch_size, drop_last=drop_last)
        return DataLoader(dataset, sampler=sampler, batch_size=None, **workers)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, **workers)


def seeded_split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices of a seeded random split of ``range(n)``."""
    order = np.random.RandomState(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def cached_tensors(path: Path, build: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
    """Load a dict of tensors from ``path``, building and saving it (atomically) on first use."""
    if path.exists():
        return torch.load(path, weights_only=True)
    tensors = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(tensors, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return tensors
