"""PAMAP2 physical-activity monitoring (Reiss & Stricker 2012), read as DABS's sensor domain.

Files: ``<root>/PAMAP2_Dataset/Protocol/subject10X.dat`` (space-separated text, 54 columns:
timestamp, activity id, heart rate, then 17 columns for each of the hand, chest and ankle
IMUs; missing values are ``NaN``). An example is a window of ``window`` = 320 consecutive
rows (3.2 s at 100 Hz) of the 52 sensor columns of one activity, labelled with the index of
that activity in :data:`ACTIVITIES` (the 11 protocol activities DABS lists). Following
DABS, NaNs are filled per column by linear interpolation and no normalisation is applied;
the rows of one activity of one subject are concatenated in file order before windowing.

DABS draws every example on the fly with the global ``np.random`` (random subject, random
activity, random start), so its train and evaluation sets change every epoch. Here the
windows are fixed once per split (``windows``):

* ``seeded`` (default): ``train_windows`` / ``test_windows`` windows drawn once with DABS's
  sampling law (class-balanced) from ``np.random.RandomState(window_seed)`` (``window_seed + 1``
  for the test split); DABS's epoch sizes are 50,000 / 10,000;
* ``grid``: every window start ``0, grid_stride, ...`` of every (subject, activity) run;
  natural class frequencies.

The interpolated sensor rows are cached as one memory-mapped ``float32`` array per split;
windows are gathered from it a batch at a time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from dabs_rq.data.array_cache import cache_key

#: activity ids of the PAMAP2 protocol that DABS uses, in label order (optional activities excluded)
ACTIVITIES = (1, 2, 3, 4, 5, 6, 7, 12, 13, 16, 24)
COLUMNS = ["timestamp", "activity_id", "heart_rate",
           *(f"{part}{i}" for part in ("hand", "chest", "ankle") for i in range(17))]
URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/00231/PAMAP2_Dataset.zip"
WINDOW_MODES = ("seeded", "grid")


def protocol_dir(root: Path) -> Path:
    return Path(root) / "PAMAP2_Dataset" / "Protocol"


def read_subject(path: Path) -> pd.DataFrame:
    """One recording with NaNs interpolated linearly per column (DABS: ``df.interpolate()``).

    ``limit_direction="both"`` also fills NaNs before a column's first value, which DABS
    leaves as NaN; in the real files those rows are transient (activity 0) rows, never used.
    """
    frame = pd.read_csv(path, sep=r"\s+", header=None, names=COLUMNS)
    return frame.interpolate(limit_direction="both")


def fetch(root: Path, url: str = URL) -> None:
    """Fetch and unpack the UCI archive into ``root`` unless the recordings are already there."""
    from torchvision.datasets.utils import download_and_extract_archive, extract_archive

    if protocol_dir(root).is_dir():
        return
    download_and_extract_archive(url, download_root=str(root), remove_finished=True)
    inner = Path(root) / "PAMAP2_Dataset.zip"  # the newer UCI archive wraps the original zip
    if not protocol_dir(root).is_dir() and inner.is_file():
        extract_archive(str(inner), str(root), remove_finished=True)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
    try:
        np.save(tmp, array)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def activity_runs(root: Path, subjects: Sequence[int], activities: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """All rows of each (subject, activity) concatenated: ``(rows [N, 52] float32, runs [R, 4])``.

    ``runs`` rows are ``(offset, length, subject, label)``; label = index in ``activities``.
    """
    rows, runs, offset = [], [], 0
    for subject in subjects:
        frame = read_subject(protocol_dir(root) / f"subject{subject}.dat")
        for label, activity in enumerate(activities):
            block = frame.loc[frame["activity_id"] == activity, COLUMNS[2:]].to_numpy(np.float32)
            rows.append(block)
            runs.append((offset, len(block), subject, label))
            offset += len(block)
    return np.concatenate(rows), np.asarray(runs, dtype=np.int64).reshape(-1, 4)


def cached_runs(path: Path, build: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, runs)`` from ``path`` (rows memory-mapped), built and saved on first use."""
    runs_path = path.with_name(path.stem + "-runs.npy")
    if not (path.exists() and runs_path.exists()):
        rows, runs = build()
        _save_atomic(path, rows)
        _save_atomic(runs_path, runs)
    return np.load(path, mmap_mode="r"), np.load(runs_path)


def seeded_windows(runs: np.ndarray, count: int, window: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """DABS's sampler, seeded: ``count`` (row start, label) pairs.

    DABS draws a uniform subject and a uniform activity, redrawing both until that subject has
    more than ``window`` rows of it (so the pair is uniform over such pairs: class-balanced),
    then a uniform start in ``[0, rows - window)``; here the same law, drawn vectorised.
    """
    usable = runs[runs[:, 1] > window]
    if not len(usable):
        raise ValueError(f"no subject has more than {window} rows of any activity: cannot cut windows")
    rng = np.random.RandomState(seed)
    picked = usable[rng.randint(len(usable), size=count)]
    starts = picked[:, 0] + rng.randint(0, picked[:, 1] - window)
    return starts.astype(np.int64), picked[:, 3].astype(np.int64)


def grid_windows(runs: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Every window start ``0, stride, ...`` (below ``length - window``, as DABS) of every run."""
    long_enough = runs[runs[:, 1] > window]
    if not len(long_enough):
        raise ValueError(f"no subject has more than {window} rows of any activity: cannot cut windows")
    starts = [offset + np.arange(0, length - window, stride) for offset, length, _, _ in long_enough]
    labels = [np.full(len(s), run[3]) for s, run in zip(starts, long_enough)]
    return np.concatenate(starts).astype(np.int64), np.concatenate(labels).astype(np.int64)


class WindowDataset(Dataset):
    """Item i is ``((rows[starts[i] : starts[i] + window],), labels[i])``; batch indexing supported."""

    supports_batch_indexing = True

    def __init__(self, rows: np.ndarray, starts: np.ndarray, labels: np.ndarray, window: int) -> None:
        self.rows, self.starts, self.window = rows, np.asarray(starts), int(window)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self._steps = np.arange(self.window)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int | list[int]) -> tuple[tuple[torch.Tensor], torch.Tensor]:
        rows = np.asarray(self.starts[index])[..., None] + self._steps
        return (torch.from_numpy(np.ascontiguousarray(self.rows[rows])),), self.labels[index]


def pamap2(
    split: str,
    cache_dir: Path,
    root: Path,
    download: bool = False,
    train_subjects: Sequence[int] = (101, 102, 103, 104, 107, 108, 109),
    test_subjects: Sequence[int] = (105,),
    window: int = 320,
    windows: str = "seeded",
    window_seed: int = 0,
    train_windows: int = 50_000,
    test_windows: int = 10_000,
    grid_stride: int = 160,
    url: str = URL,
) -> WindowDataset:
    """Windows ``([window, 52] float32,)`` -> activity label 0..10 of the split's subjects."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    if windows not in WINDOW_MODES:
        raise ValueError(f"windows must be one of {', '.join(WINDOW_MODES)}; got {windows!r}")
    if download:
        fetch(Path(root), url)
    subjects = [int(s) for s in (train_subjects if split == "train" else test_subjects)]
    key = cache_key(subjects=subjects, activities=ACTIVITIES, interpolate="linear-both")
    rows, runs = cached_runs(Path(cache_dir) / "pamap2" / f"rows-{key}.npy",
                             lambda: activity_runs(Path(root), subjects, ACTIVITIES))
    if windows == "seeded":
        count = train_windows if split == "train" else test_windows
        starts, labels = seeded_windows(runs, int(count), window, int(window_seed) + (split == "test"))
    else:
        starts, labels = grid_windows(runs, window, int(grid_stride))
    return WindowDataset(rows, starts, labels, window)
