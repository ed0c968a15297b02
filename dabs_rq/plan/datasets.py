"""What a plan knows of a dataset without reading its data: train / test example counts and tokens per example.

Example counts come from the dataset YAML's ``examples`` key (``{train, test, source, approximate}``),
from the reader's settings where they fix the count (PAMAP2 windows, the X-ray8 train fraction), and
are otherwise ``unknown``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import DictConfig


@dataclass(frozen=True)
class Examples:
    """Train / test example counts of a dataset (None: unknown) and where they come from."""

    train: int | None
    test: int | None
    source: str
    approx: bool = False


def yaml_path(name: str) -> str:
    """How a plan names a dataset's YAML."""
    return f"domains/{name}.yaml"


def _split(total: int, fraction: float) -> tuple[int, int]:
    train = int(total * fraction)
    return train, total - train


def stated_examples(dataset: DictConfig) -> Examples | None:
    """The counts the YAML's ``examples`` key states (``source`` defaults to the YAML itself), if any."""
    stated = dataset.get("examples")
    if stated is None:
        return None
    count = lambda key: None if stated.get(key) is None else int(stated[key])  # noqa: E731
    source = str(stated.get("source") or yaml_path(str(dataset.name)))
    return Examples(count("train"), count("test"), source, bool(stated.get("approximate", False)))


def examples(dataset: DictConfig, reader_overridden: bool) -> Examples:
    """The dataset's train / test example counts, as far as they are known without reading data."""
    reader = dataset.reader
    if str(reader._target_).endswith("pamap2.pamap2"):
        if (dataset.get("reader_options") or {}).get("windows", "seeded") == "seeded":
            return Examples(
                int(reader.get("train_windows", 50_000)),
                int(reader.get("test_windows", 10_000)),
                f"{yaml_path(dataset.name)} reader.train_windows / test_windows",
            )
        return Examples(None, None, "grid windows: counted when the data is read")
    if str(dataset.name) == "xray8":
        train, test = _split(112_120, float(reader.get("train_fraction", 0.9)))
        return Examples(train, test, f"{yaml_path('xray8')}: 112,120 images, reader.train_fraction")
    known = stated_examples(dataset)
    if known is None:
        return Examples(None, None, "unknown")
    if reader_overridden:
        return Examples(None, None, f"unknown: dataset_overrides change its reader ({known.source} is for the YAML's)")
    return known


def tokens(dataset: DictConfig) -> int | None:
    """Transformer tokens of one example, CLS included (None for an embedder this cannot count)."""
    total = 1
    for spec in dataset.inputs:
        kind = str(spec._target_).rsplit(".", 1)[-1]
        if kind == "PatchEmbedding2d":
            total += math.prod(int(s) // int(p) for s, p in zip(spec.image_size, spec.patch_size, strict=True))
        elif kind == "TokenEmbedding":
            total += int(spec.seq_len)
        elif kind == "SegmentEmbedding1d":
            total += int(spec.seq_len) // int(spec.segment_size)
        else:
            return None
    return total
