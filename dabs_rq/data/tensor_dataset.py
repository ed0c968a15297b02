"""In-memory dataset of (inputs tuple, label) pairs, the item format every reader returns."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler


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


class ShardedBatchSampler(Sampler[list[int]]):
    """Batches of indices for one rank of ``world_size``: the same seeded order on every rank,
    batches dealt round-robin, so global step k of N ranks sees exactly the samples of step k
    of one process with an N times larger batch.

    ``even`` (training) gives every rank the same number of batches (DDP needs it; at most
    ``world_size - 1`` batches of an epoch are left out); evaluation (``even=False``) keeps every
    sample exactly once, never padding with repeats. Lightning calls :meth:`set_epoch`, which
    reshuffles reproducibly (order = seed + epoch).
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1, even: bool = True) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.n, self.batch_size, self.shuffle, self.drop_last = n, batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size, self.even = seed, rank, world_size, even
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _num_batches(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (rest > 0 and not self.drop_last)

    def __len__(self) -> int:
        total = self._num_batches()
        if self.even:
            return total // self.world_size
        return len(range(self.rank, total, self.world_size))

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.n)
        for b in range(self.rank, self.world_size * len(self) if self.even else self._num_batches(), self.world_size):
            yield order[b * self.batch_size:(b + 1) * self.batch_size].tolist()


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, drop_last: bool, num_workers: int = 0,
                pin_memory: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
                even: bool | None = None) -> DataLoader:
    """A DataLoader over this rank's share; in-memory datasets are sliced a batch at a time.

    ``even`` defaults to ``shuffle`` (training loaders); see :class:`ShardedBatchSampler`.
    """
    workers = dict(num_workers=num_workers, persistent_workers=num_workers > 0, pin_memory=pin_memory)
    if isinstance(dataset, IterableDataset):  # streams (mC4) order and shard themselves
        return DataLoader(dataset, batch_size=batch_size, drop_last=drop_last, **workers)
    sampler = ShardedBatchSampler(len(dataset), batch_size, shuffle, drop_last, seed, rank, world_size,
                                  shuffle if even is None else even)
    if getattr(dataset, "supports_batch_indexing", False):
        return DataLoader(dataset, sampler=sampler, batch_size=None, **workers)
    return DataLoader(dataset, batch_sampler=sampler, **workers)


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
    save_tensors_atomic(tensors, path)
    return tensors


def save_tensors_atomic(tensors: dict[str, Tensor], path: Path) -> None:
    """``torch.save`` to a temporary file renamed into place: readers never see a partial file."""
    from dabs_rq.results.records import atomic_file

    with atomic_file(Path(path), "wb") as handle:
        torch.save(tensors, handle)
