"""In-memory dataset of (inputs tuple, label) pairs, the item format every reader returns."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, default_collate

from dabs_rq.io import atomic_file


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

    ``same_count`` (training) gives every rank the same number of batches (DDP needs it; at most
    ``world_size - 1`` batches of an epoch are left out); evaluation (``same_count=False``) keeps every
    sample exactly once, never padding with repeats. Lightning calls :meth:`set_epoch`, which
    reshuffles reproducibly (order = seed + epoch).

    Resuming mid-epoch: :attr:`consumed` is how many of this epoch's batches training has used
    (the trainer side sets it, see :class:`dabs_rq.checkpointing.ResumableCheckpoint`);
    :meth:`state_dict` saves it with the epoch, and after :meth:`load_state_dict` the next
    iteration continues that epoch's order with the first batch not yet used.

    ``with_keys``: yield ``(fetch_seed, indices)`` instead of ``indices``: the seed of the random
    numbers a dataset may draw while fetching that batch (:func:`make_loader`), a function of
    (seed, epoch, batch) only, so it is the same in an uninterrupted and a resumed run.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        same_count: bool = True,
        with_keys: bool = False,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.n, self.batch_size, self.shuffle, self.drop_last = n, batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size, self.same_count = seed, rank, world_size, same_count
        self.with_keys = with_keys
        self.epoch = 0
        self.consumed = 0  # batches of this epoch training has used (set by the trainer side)
        self._start = 0  # batches of this epoch to skip on the next iteration (a resumed run)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.consumed, self._start = epoch, 0, 0

    def state_dict(self) -> dict[str, int]:
        """Where training is: ``{"epoch": e, "batches": k}``, the first k batches of epoch e used."""
        return {"epoch": int(self.epoch), "batches": int(self.consumed)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """The next iteration continues ``state``'s epoch after its used batches (the next epoch
        from its start when they were all used)."""
        epoch, start = int(state["epoch"]), int(state["batches"])
        if start >= len(self):
            epoch, start = epoch + 1, 0
        self.epoch, self.consumed, self._start = epoch, start, start

    def _num_batches(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (rest > 0 and not self.drop_last)

    def __len__(self) -> int:
        total = self._num_batches()
        if self.same_count:
            return total // self.world_size
        return len(range(self.rank, total, self.world_size))

    def __iter__(self) -> Iterator[Any]:
        start, self._start = self._start, 0
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.n)
        stop = self.world_size * len(self) if self.same_count else self._num_batches()
        for b in range(self.rank + start * self.world_size, stop, self.world_size):
            indices = order[b * self.batch_size : (b + 1) * self.batch_size].tolist()
            yield (fetch_seed(self.seed, self.epoch, b), indices) if self.with_keys else indices


def fetch_seed(seed: int, epoch: int, batch: int) -> int:
    """The seed of the random numbers drawn while fetching global batch ``batch`` of ``epoch``."""
    data = f"{seed}:{epoch}:{batch}".encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


@contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """torch (CPU), numpy and ``random`` seeded with ``seed`` inside, their previous states restored after."""
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.default_generator.manual_seed(seed)  # the CPU generator only: CUDA's stream is left alone
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])


class SeededBatches(Dataset):
    """``dataset`` fetched a batch at a time by ``(fetch_seed, indices)`` keys, the global random
    streams seeded with the key meanwhile: whatever a dataset draws (a random window, a flip) is a
    function of (seed, epoch, batch), never of the worker count, of what training drew before or
    of where a resumed run started, and fetching never moves training's own random streams."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.batched = bool(getattr(dataset, "supports_batch_indexing", False))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, list[int]]) -> Any:
        seed, indices = key
        with seeded_rng(seed):
            if self.batched:
                return self.dataset[indices]
            return default_collate([self.dataset[i] for i in indices])


class ResumableLoader(DataLoader):
    """A DataLoader over a :class:`ShardedBatchSampler` that Lightning checkpoints: Lightning (2.x)
    saves ``state_dict()`` of every training loader that has one with the fit loop's state and
    hands it back to ``load_state_dict`` before the resumed epoch's iterator is made."""

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)

    def mark_consumed(self, batches: int) -> None:
        """Training has used the first ``batches`` batches of the current epoch."""
        self.sampler.consumed = int(batches)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    drop_last: bool,
    num_workers: int = 0,
    pin_memory: bool = False,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    same_count: bool | None = None,
) -> DataLoader:
    """A DataLoader over this rank's share; in-memory datasets are sliced a batch at a time.

    ``same_count`` (every rank gets as many batches) defaults to ``shuffle`` (training loaders); see
    :class:`ShardedBatchSampler`.
    Map-style datasets get a :class:`ResumableLoader` (a killed run resumes mid-epoch at the
    exact batch), fetched through :class:`SeededBatches`, with a generator of its own for the
    workers' base seeds: making an iterator or fetching a batch never draws from the global
    random streams, so training's draws are the same in an uninterrupted and a resumed run.
    """
    workers = dict(num_workers=num_workers, persistent_workers=num_workers > 0, pin_memory=pin_memory)
    if isinstance(dataset, IterableDataset):  # streams (mC4) order and shard themselves
        return DataLoader(dataset, batch_size=batch_size, drop_last=drop_last, **workers)
    sampler = ShardedBatchSampler(
        len(dataset),
        batch_size,
        shuffle,
        drop_last,
        seed,
        rank,
        world_size,
        shuffle if same_count is None else same_count,
        with_keys=True,
    )
    return ResumableLoader(
        SeededBatches(dataset),
        sampler=sampler,
        batch_size=None,
        generator=torch.Generator().manual_seed(seed),
        **workers,
    )


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
    """``torch.save`` through :func:`dabs_rq.io.atomic_file`: readers never see a partial file."""
    with atomic_file(path, "wb") as handle:
        torch.save(tensors, handle)
