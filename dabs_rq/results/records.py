"""One JSON record per transfer evaluation (written by the runner through :mod:`dabs_rq.io`)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from dabs_rq.paths import PROJECT_ROOT

#: 2: protocol name/fingerprint/settings, dataset and algorithm fingerprints, per-epoch test values,
#: portable paths, no host name unless ``record.host=true``.
RECORD_SCHEMA = 2
_PACKAGES = ("dabs_rq", "torch", "pytorch-lightning", "torchmetrics", "hydra-core", "numpy")


def record_path(results_dir: Path, experiment: str, dataset: str, algorithm: str, seed: int) -> Path:
    """Where the runner stores the record of one (experiment, dataset, algorithm, seed)."""
    return Path(results_dir) / "records" / experiment / dataset / algorithm / f"seed{seed}.json"


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers, stored in every record."""
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def compute_context() -> dict[str, Any]:
    """What ran the job, beyond package versions: torch's intra-op thread count (floating-point sums,
    hence the last digits of a result, depend on it) and the GPU, if one was used."""
    import torch

    return {
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_initialized() else None,
    }


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The project's commit (with ``-dirty`` if the tree has changes), or None outside git."""
    try:
        run = lambda *args: subprocess.run(  # noqa: E731
            ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD")
        return commit + ("-dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _relative(path: Path, *bases: Path) -> str:
    """``path`` relative to the first base that holds it, else its name alone (no user folders in records)."""
    path = Path(path).resolve()
    for base in bases:
        try:
            return str(path.relative_to(Path(base).resolve()))
        except ValueError:
            continue
    return path.name


def build_record(
    cfg: Any,
    config: dict,
    domain: Any,
    dataset_cfg: Any,
    algorithm: Any,
    value: float,
    details: dict,
    pretraining: dict,
    datasets: dict,
    transfer_seconds: float,
    job_dir: Path,
    launch: dict,
) -> dict:
    """The JSON record of one transfer evaluation: what the number is, and everything that decided it.

    ``protocol`` names the protocol and fingerprints its number-affecting settings
    (:func:`dabs_rq.results.protocol.protocol_settings`); ``datasets`` holds the resolved pretraining
    and transfer YAMLs and ``dataset_fingerprint`` their hash; ``algorithm_fingerprint`` hashes
    ``algorithm_settings``. Paths are relative (job folder: to the working directory); the host name
    is stored only with ``record.host=true``.
    """
    from omegaconf import OmegaConf

    from dabs_rq.checkpointing import fingerprint, identity_config
    from dabs_rq.results.protocol import digest, protocol_settings

    settings = protocol_settings(config, pretraining["world_size"])
    algorithm_settings = algorithm.settings()
    plain = lambda node: OmegaConf.to_container(node) if node is not None else {}  # noqa: E731
    record = {
        "schema": RECORD_SCHEMA,
        "experiment": cfg.experiment_name,
        "dataset": dataset_cfg.name,
        "display_name": dataset_cfg.get("display_name", dataset_cfg.name),
        "paper_name": dataset_cfg.get("paper_name"),
        "synthetic": bool(dataset_cfg.get("synthetic", False)),
        "reader_options": plain(dataset_cfg.get("reader_options")),
        "domain": dataset_cfg.domain,
        "pretrain_dataset": domain.name,
        "algorithm": cfg.algorithm.name,
        "algorithm_settings": algorithm_settings,
        "algorithm_fingerprint": digest(algorithm_settings),
        "seed": cfg.seed,
        "metric": details["task"]["metric"],
        "value": value,
        "protocol": {
            "name": config.get("protocol", {}).get("name", "unnamed"),
            "fingerprint": digest(settings),
            "settings": settings,
            "transfer_mode": cfg.transfer.mode,
            "transfer_epochs": cfg.transfer.epochs,
            "transfer_batch_size": details["batch_size"],
            "transfer_optimizer": OmegaConf.to_container(cfg.transfer.optimizer),
            "encoder_frozen": True,
            "pooling": cfg.model.pool,
            "split_evaluated": "test",
            **details,
        },
        "pretraining": {
            **pretraining,
            "reader_options": plain(domain.get("reader_options")),
            "seconds": round(pretraining["seconds"], 3),
            "effective_batch_size": pretraining["device_batch_size"]
            * pretraining["world_size"]
            * int(cfg.trainer.get("accumulate_grad_batches", 1)),
            "batch_scope": cfg.batch_scope,
            "lr_scaling": cfg.pretrain.get("lr_scaling", "none"),
            "optimizer": OmegaConf.to_container(cfg.pretrain.optimizer),
        },
        "datasets": datasets,
        "dataset_fingerprint": digest(datasets),
        "job_dir": _relative(job_dir, Path.cwd()),
        "encoder_checkpoint": "encoder.pt",  # in job_dir
        "config": identity_config(config),
        "fingerprint": fingerprint(config),
        **launch,
        "versions": package_versions(),
        "compute": compute_context(),
        "git_commit": git_commit(),
        "timings": {"pretrain_s": round(pretraining["seconds"], 3), "transfer_s": round(transfer_seconds, 3)},
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if cfg.get("record", {}).get("host", False):
        record["host"] = os.uname().nodename
        record["job_dir"] = str(Path(job_dir).resolve())
    return record
