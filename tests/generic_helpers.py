"""Helpers for the generic-reader tests: write a pair of domain YAMLs, run the public command on
them, and read back the rows they produced in the results table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml


def write_domain(folder: Path, name: str, **fields) -> Path:
    """``<folder>/<name>.yaml`` holding ``fields`` (name added)."""
    path = Path(folder) / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **fields}, sort_keys=False))
    return path


def run_tiny_sweep(tmp_path: Path, data_cache: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``dabs-rq -m experiment=embedded <overrides>`` with a tiny encoder, 2 pretraining steps and 1 probe epoch;
    records in ``tmp_path / "results"``, job folders in ``tmp_path / "multirun"``."""
    env = {**os.environ, "DABS_RQ_RESULTS": str(tmp_path / "results"), "DABS_RQ_CACHE": str(data_cache)}
    cmd = [
        sys.executable,
        "-m",
        "dabs_rq.cli",
        "-m",
        "experiment=embedded",
        "model=tiny",
        "logger=none",
        "pretrain.max_steps=2",
        "transfer.epochs=1",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        *overrides,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def run_public_command(
    domain: str, domains_dir: Path, tmp_path: Path, data_cache: Path, *extra: str, algorithm: str = "rq"
) -> subprocess.CompletedProcess:
    """``dabs-rq domain=<domain> ...`` with the user's domain folder in ``$DABS_RQ_DOMAINS``; tiny and fast."""
    env = {**os.environ, "DABS_RQ_DOMAINS": str(domains_dir), "DABS_RQ_CACHE": str(data_cache)}
    cmd = [
        sys.executable,
        "-m",
        "dabs_rq.cli",
        f"domain={domain}",
        f"algorithm={algorithm}",
        "model=tiny",
        "logger=none",
        "pretrain.max_steps=3",
        "pretrain.batch_size=8",
        "transfer.epochs=2",
        "transfer.mode=cached_features",
        "trainer.enable_progress_bar=false",
        "experiment_name=mine",
        f"results_dir={tmp_path / 'results'}",
        f"hydra.run.dir={tmp_path / 'job' / domain}",
        *extra,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def table_rows(tmp_path: Path) -> dict[str, dict]:
    """Rows of the rebuilt ``results/table.csv`` by dataset, and the records by dataset."""
    import pandas as pd

    table = pd.read_csv(tmp_path / "results" / "table.csv")
    return {str(row["dataset"]): row.to_dict() for _, row in table.iterrows()}


def record(tmp_path: Path, dataset: str, algorithm: str = "rq") -> dict:
    return json.loads((tmp_path / "results/records/mine" / dataset / algorithm / "seed0.json").read_text())


def public_run_adds_row(
    domains_dir: Path, tmp_path: Path, data_cache: Path, pretrain: str, dataset: str, display_name: str, domain: str
) -> dict:
    """Run the public command on ``pretrain``; ``dataset``'s row must be in the table; returns its record."""
    done = run_public_command(pretrain, domains_dir, tmp_path, data_cache)
    assert done.returncode == 0, done.stderr[-3000:]
    row = table_rows(tmp_path)[dataset]
    assert row["display_name"] == display_name and row["domain"] == domain and row["n"] == 1, row
    return record(tmp_path, dataset)
