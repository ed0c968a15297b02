"""DDP ranks (or concurrent jobs) never build the same data cache at once: one builds, the others wait
and read it."""

from __future__ import annotations

import multiprocessing as mp
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

pytestmark = pytest.mark.slow  # two spawned processes, each importing torch

READER = textwrap.dedent("""
    import time
    from pathlib import Path

    import torch

    from dabs_rq.data.tensor_dataset import TensorInputsDataset


    def read(split, cache_dir, **kwargs):
        cache = Path(cache_dir) / "built.pt"
        if not cache.exists():  # a slow build, as a big dataset's first decode
            time.sleep(1.0)
            with open(Path(cache_dir) / "builds.log", "a") as log:
                log.write("built\\n")
            torch.save({"x": torch.zeros(4, 3)}, cache)
        data = torch.load(cache)
        return TensorInputsDataset([data["x"]], torch.zeros(4, dtype=torch.long))
""")


def _load(folder: str, cache: str) -> int:
    sys.path.insert(0, folder)
    from dabs_rq.data.datamodule import DomainDataModule

    cfg = OmegaConf.create({"name": "slow_set", "reader": {"_target_": "slow_reader.read"}, "batch_size": 2})
    return len(DomainDataModule(cfg, Path(cache)).split("train"))


def test_two_processes_reading_one_new_dataset_build_its_cache_once(tmp_path):
    (tmp_path / "slow_reader.py").write_text(READER)
    cache = tmp_path / "cache"
    with mp.get_context("spawn").Pool(2) as pool:
        sizes = pool.starmap(_load, [(str(tmp_path), str(cache))] * 2)
    assert sizes == [4, 4]
    assert (cache / "builds.log").read_text() == "built\n"  # without the lock: two builds at once
