"""The memory-mapped preprocessing cache: built once, reused, batch-indexable."""

import numpy as np
import torch

from dabs_rq.data.array_cache import ArrayDataset, cache_key, memmap_cache


def test_cache_is_built_once_and_reused(tmp_path):
    calls = []

    def fill(i):
        calls.append(i)
        return np.full((2, 3), i, dtype=np.float32)

    path = tmp_path / f"split-{cache_key(n_mels=64, hop=10)}.npy"
    first = memmap_cache(path, 5, (2, 3), np.float16, fill)
    again = memmap_cache(path, 5, (2, 3), np.float16, fill)
    assert calls == list(range(5)) and first.shape == again.shape == (5, 2, 3)
    assert float(again[4, 1, 2]) == 4.0
    assert not list(tmp_path.glob(".*tmp*"))  # no temp files left
    assert cache_key(a=1, b=2) == cache_key(b=2, a=1) != cache_key(a=1, b=3)


def test_array_dataset_items_and_batches(tmp_path):
    images = memmap_cache(tmp_path / "x.npy", 4, (1, 2, 2), np.float16, lambda i: np.full((1, 2, 2), i))
    ids = np.arange(12, dtype=np.int32).reshape(4, 3)
    ds = ArrayDataset([images, ids], np.array([0, 1, 0, 1]), dtypes=[torch.float32, torch.int32])
    (x, t), y = ds[2]
    assert x.dtype == torch.float32 and x.shape == (1, 2, 2) and float(x[0, 0, 0]) == 2.0
    assert t.tolist() == [6, 7, 8] and int(y) == 0
    (xb, tb), yb = ds[[3, 1]]
    assert xb.shape == (2, 1, 2, 2) and tb.shape == (2, 3) and yb.tolist() == [1, 1]
