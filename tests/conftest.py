"""Shared test helpers: Hydra composition of the project's config with test-safe overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from dabs_rq.paths import CONF_DIR


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """One data cache for the whole test session (never the user's ~/.cache)."""
    return tmp_path_factory.mktemp("dabs_rq_cache")


@pytest.fixture
def tiny_run_overrides(tmp_path: Path, data_cache: Path) -> list[str]:
    """A few-second run: tiny encoder, few steps/epochs, results and logs in tmp."""
    return [
        "experiment=embedded",
        "model=tiny",
        "logger=none",
        "pretrain.max_steps=3",
        "transfer.epochs=2",
        f"results_dir={tmp_path / 'results'}",
        f"output_dir={tmp_path / 'out'}",
        "trainer.enable_progress_bar=false",
        f"cache_dir={data_cache}",
    ]
