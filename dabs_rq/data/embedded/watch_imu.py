"""Real smartwatch IMU recordings bundled in ``seglearn`` (Burns et al. 2018), as sensor windows.

140 recordings (6 axes: accelerometer + gyroscope, 50 Hz) of 7 shoulder-rehabilitation
exercises by 10 subjects. Recordings are cut into windows of ``window`` steps with
``stride`` (:func:`dabs_rq.data.windows.cut_windows`); the split is subject-wise (DABS's
PAMAP2 also holds out subjects): subjects ``test_subjects`` form the test split, the others
train (and pretraining).
Channels are standardised with the training subjects' per-channel mean and std. A
``window`` longer than a recording (the shortest has 947 steps) is refused in one line rather
than leaving that recording out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dabs_rq.data.embedded.package_data import package_file
from dabs_rq.data.splits import check_split
from dabs_rq.data.tensor_dataset import TensorInputsDataset, cached_tensors
from dabs_rq.data.windows import cut_windows
from dabs_rq.errors import UserError


def watch_exercises(
    split: str,
    cache_dir: Path,
    window: int = 100,
    stride: int = 50,
    test_subjects: Sequence[int] = (8, 9, 10),
) -> TensorInputsDataset:
    """Windows ([window, 6],) -> exercise id 0..6 of the chosen subjects."""
    check_split(split)
    held_out = sorted(int(s) for s in test_subjects)

    def build() -> dict:
        # Package data of an installed wheel (a pickled dict of numpy arrays).
        raw = np.load(package_file("seglearn", "data/watch_dataset.npy"), allow_pickle=True).item()
        lengths = [len(series) for series in raw["X"]]
        short = sum(n < window for n in lengths)
        if short:  # it would give no window: its recording would silently vanish
            raise UserError(
                f"reader.window: {short} of the {len(lengths)} recordings are shorter than window={window} "
                f"steps (the shortest has {min(lengths)}); lower reader.window"
            )
        xs, ys, subjects = [], [], []
        for series, label, subject in zip(raw["X"], raw["y"], raw["subject"]):
            w = cut_windows(np.asarray(series, dtype=np.float32), window, stride)
            xs.append(w), ys.append(np.full(len(w), label)), subjects.append(np.full(len(w), subject))
        x, subject = torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(subjects))
        train = ~torch.isin(subject, torch.tensor(held_out))
        mean, std = x[train].mean(dim=(0, 1)), x[train].std(dim=(0, 1))
        return {"windows": (x - mean) / std, "labels": torch.from_numpy(np.concatenate(ys)).long(), "subject": subject}

    key = f"watch_w{window}_s{stride}_test{'-'.join(map(str, held_out))}.pt"
    data = cached_tensors(Path(cache_dir) / key, build)
    is_test = torch.isin(data["subject"], torch.tensor(held_out))
    keep = is_test if split == "test" else ~is_test
    return TensorInputsDataset([data["windows"][keep]], data["labels"][keep])
