"""Shared test helpers: Hydra composition with test-safe overrides, fixture data roots, and reading splits back."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from dabs_rq.data import domains
from dabs_rq.data.datamodule import DomainDataModule
from dabs_rq.data.storage import DatasetMissingError
from dabs_rq.paths import CONF_DIR

# --------------------------------------------------------------------------- configs of tiny runs


def compose_config(overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """The project's Hydra config with ``overrides``, as the command line would compose it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=return_hydra_config)


def _tiny_run(tmp_path: Path, cache: Path, max_steps: int, epochs: int) -> list[str]:
    """Overrides every test run shares: tiny encoder, no logger, few steps/epochs, results and logs in tmp."""
    return [
        "model=tiny",
        "logger=none",
        f"pretrain.max_steps={max_steps}",
        f"transfer.epochs={epochs}",
        f"results_dir={tmp_path / 'results'}",
        f"output_dir={tmp_path / 'out'}",
        "trainer.enable_progress_bar=false",
        f"cache_dir={cache}",
    ]


@pytest.fixture
def tiny_run_overrides(tmp_path: Path, data_cache: Path) -> list[str]:
    """A few-second run: tiny encoder, few steps/epochs, results and logs in tmp."""
    return ["experiment=embedded", *_tiny_run(tmp_path, data_cache, max_steps=3, epochs=2)]


def pipeline_overrides(
    data_root: Path, tmp_path: Path, cache: Path, *, domain: str, algorithm: str, batch_size: int
) -> list[str]:
    """A tiny pretrain (2 steps) + transfer (1 epoch, cached features) run on the fixture data under ``data_root``.

    Records land in ``tmp_path / "results"``, logs in ``tmp_path / "out"``; the data cache is ``cache``.
    """
    # Fixture splits are smaller than a DABS transfer batch: keep their partial batch (DABS drops it).
    return [
        *_tiny_run(tmp_path, cache, max_steps=2, epochs=1),
        f"domain={domain}",
        f"algorithm={algorithm}",
        f"pretrain.batch_size={batch_size}",
        "transfer.mode=cached_features",
        "transfer.drop_last=false",
        f"data_root={data_root}",
    ]


# --------------------------------------------------------------------------- fixture data and splits


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """One data cache for the whole test session (never the user's ~/.cache; ``$DABS_RQ_TEST_CACHE``
    names a prepared one, e.g. on a GPU machine without the embedded data's source packages)."""
    prepared = os.environ.get("DABS_RQ_TEST_CACHE")
    return Path(prepared) if prepared else tmp_path_factory.mktemp("dabs_rq_cache")


def fixture_root(tmp_path_factory: pytest.TempPathFactory, *writers: Callable[[Path], object]) -> Path:
    """A fresh data root holding the tiny datasets that ``writers`` (``write_x(data_root)``) put there."""
    root = tmp_path_factory.mktemp("dabs_data")
    for write in writers:
        write(root)
    return root


def load_split(name: str, split: str, data_root: Path, cache: Path, cfg: DictConfig | None = None) -> Dataset:
    """A split of domain ``name`` (or of ``cfg``, a changed copy of its YAML) read the way a run reads it."""
    cfg = cfg if cfg is not None else domains.load(name)
    return DomainDataModule(cfg, cache_dir=cache, data_root=data_root).split(split)


def missing_dataset(name: str, hint: str = "") -> pytest.RaisesExc:
    """``pytest.raises`` for the missing-data error of ``name``, whose message then matches the regex ``hint``."""
    return pytest.raises(DatasetMissingError, match=f"dataset '{name}' is not on disk.*{hint}")


def dabs_reference(path: Path, *steps: Callable) -> torch.Tensor:
    """DABS's image pipeline as the reference: open, ``convert("RGB")``, ``steps``, ``ToTensor()`` (float)."""
    return transforms.Compose([*steps, transforms.ToTensor()])(Image.open(path).convert("RGB"))
