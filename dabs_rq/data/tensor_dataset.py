"""In-memory dataset of (inputs tuple, label) pairs, the item format every reader returns."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset


class TensorInputsDataset(Dataset):
    """Item i is ``((inputs[0][i], inputs[1][i], ...), labels[i])``."""

    def __init__(self, inputs: Sequence[Tensor], labels: Tensor) -> None:
        if any(len(x) != len(labels) for x in inputs):
            raise ValueError("every input tensor needs one row per label")
        self.inputs, self.labels = list(inputs), labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[tuple[Tensor, ...], Tensor]:
        return tuple(x[index] for x in self.inputs), self.labels[index]


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
