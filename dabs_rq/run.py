"""One benchmark job: pretrain an encoder on a domain, then linear-probe each transfer dataset.

Every transfer evaluation writes one JSON record (see :mod:`dabs_rq.results.records`).
Everything is built from config by ``_target_`` instantiation; this module only
sequences the stages.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from dabs_rq.data import domains, storage
from dabs_rq.data.datamodule import DomainDataModule
from dabs_rq.data.tensor_dataset import TensorInputsDataset, make_loader
from dabs_rq.encoder import build_encoder
from dabs_rq.paths import cache_dir as default_cache_dir
from dabs_rq.results.records import git_commit, package_versions, record_path, write_json_atomic
from dabs_rq.results.table import resolve_results_dir
from dabs_rq.transfer import TRANSFER_MODES, FeatureExtractor, LinearProbe


# Lightning's per-trainer banners (GPU available, tips) drown the progress output of a sweep.
for _name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# In-memory datasets need no loader workers; the hint is noise for them.
warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def _check_writable(folder: Path) -> None:
    """Fail before any training if results cannot be stored."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as err:
        raise OSError(f"results directory {folder} is not writable ({err.strerror}); set results_dir=<folder>") from err


def _launch() -> dict:
    """How this job was started: the command typed and this job's own overrides (when run by Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {"command": None, "job_overrides": None}
    return {
        "command": " ".join(["dabs-rq", *(shlex.quote(arg) for arg in sys.argv[1:])]),
        "job_overrides": list(HydraConfig.get().overrides.task),
    }


def _validate(cfg: DictConfig) -> None:
    if cfg.transfer.mode not in TRANSFER_MODES:
        raise ValueError(f"transfer.mode must be one of {', '.join(TRANSFER_MODES)}; got {cfg.transfer.mode!r}")
    for key, value in (("pretrain.max_steps", cfg.pretrain.max_steps), ("transfer.epochs", cfg.transfer.epochs)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    for key in ("pretrain.batch_size", "transfer.batch_size"):
        value = OmegaConf.select(cfg, key)
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ValueError(f"{key} must be a positive integer or null, got {value!r}")


def _trainer(cfg: DictConfig, logger: Any, **overrides: Any) -> pl.Trainer:
    return instantiate(cfg.trainer, logger=logger if logger is not None else False, **overrides)


def _quiet_trainer(cfg: DictConfig, logger: Any, **overrides: Any) -> pl.Trainer:
    """A trainer for the short transfer stages: no progress bar (one summary line is printed instead)."""
    return _trainer(cfg, logger, enable_progress_bar=cfg.transfer.mode == "online", **overrides)


def pretrain(cfg: DictConfig, algorithm: pl.LightningModule, data: DomainDataModule, logger: Any) -> int:
    """Fit ``algorithm`` for ``pretrain.max_steps`` steps; returns the steps taken."""
    trainer = _trainer(cfg, logger, max_steps=cfg.pretrain.max_steps, max_epochs=-1)
    trainer.fit(algorithm, train_dataloaders=data.pretrain_dataloader())
    return int(trainer.global_step)


def _features(cfg: DictConfig, encoder: torch.nn.Module, loader: DataLoader) -> TensorInputsDataset:
    trainer = _quiet_trainer(cfg, None)
    batches = trainer.predict(FeatureExtractor(encoder), dataloaders=loader)
    return TensorInputsDataset([torch.cat([f for f, _ in batches])], torch.cat([y for _, y in batches]))


def transfer(cfg: DictConfig, encoder: torch.nn.Module, dataset_cfg: DictConfig, cache: Path,
             logger: Any) -> tuple[float, dict]:
    """Linear-probe ``encoder`` on one transfer dataset; returns (metric value, details)."""
    task = instantiate(dataset_cfg.task)
    batch_size = cfg.transfer.batch_size or dataset_cfg.batch_size
    data = DomainDataModule(dataset_cfg, cache, num_workers=cfg.pretrain.num_workers, batch_size=batch_size,
                            data_root=cfg.data_root, download=cfg.download)
    encoder.requires_grad_(False)
    if cfg.transfer.mode == "cached_features":
        train_set = _features(cfg, encoder, data.eval_train_dataloader())
        test_set = _features(cfg, encoder, data.test_dataloader())
        train_loader = make_loader(train_set, batch_size, shuffle=True, drop_last=False)
        test_loader = make_loader(test_set, batch_size, shuffle=False, drop_last=False)
        probe_encoder = None
    else:
        train_loader, test_loader, probe_encoder = data.train_dataloader(), data.test_dataloader(), encoder
    probe = LinearProbe(encoder.dim, task, instantiate(cfg.transfer.optimizer), encoder=probe_encoder)
    trainer = _quiet_trainer(cfg, logger, max_epochs=cfg.transfer.epochs)
    trainer.fit(probe, train_dataloaders=train_loader)
    (metrics,) = trainer.test(probe, dataloaders=test_loader, verbose=False)
    details = {"n_train": len(data.split("train")), "n_test": len(data.split("test")), "task": task.describe()}
    return float(metrics["transfer/val_metric"]), details


def run(cfg: DictConfig) -> list[dict]:
    """Pretrain (unless the algorithm needs none) and evaluate every transfer dataset of ``cfg.domain``."""
    _validate(cfg)
    results_dir = resolve_results_dir(cfg.results_dir)
    _check_writable(results_dir)
    cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    output_dir = Path(cfg.output_dir)
    overrides = OmegaConf.to_container(cfg.dataset_overrides) if cfg.get("dataset_overrides") else {}
    domain = domains.load(cfg.domain, cfg.extra_domain_dirs, role="pretrain", overrides=overrides.get(cfg.domain))
    transfer_sets = domains.transfer_datasets(domain, cfg.extra_domain_dirs, overrides)

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    encoder = build_encoder(cfg.model, domain.inputs)
    algorithm = instantiate(cfg.algorithm.module, encoder=encoder, optimizer=instantiate(cfg.pretrain.optimizer))
    # Every dataset this job reads must be on disk (or downloadable) before any training starts.
    needed = ([domain] if algorithm.requires_pretraining else []) + transfer_sets
    for dataset_cfg in needed:
        if "data" in dataset_cfg:
            storage.require(dataset_cfg, storage.data_root(cfg.data_root), cfg.download)
    logger = instantiate(cfg.logger) if cfg.get("logger") else None
    data = DomainDataModule(domain, cache, num_workers=cfg.pretrain.num_workers, batch_size=cfg.pretrain.batch_size,
                            data_root=cfg.data_root, download=cfg.download)

    started = time.perf_counter()
    steps = pretrain(cfg, algorithm, data, logger) if algorithm.requires_pretraining else 0
    pretrain_seconds = time.perf_counter() - started
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.save(encoder.state_dict(), output_dir / "encoder.pt")

    config = OmegaConf.to_container(cfg, resolve=True)
    records = []
    for dataset_cfg in transfer_sets:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        t0 = time.perf_counter()
        value, details = transfer(cfg, encoder, dataset_cfg, cache, logger)
        record = {
            "schema": 1,
            "experiment": cfg.experiment_name,
            "dataset": dataset_cfg.name,
            "display_name": dataset_cfg.get("display_name", dataset_cfg.name),
            "paper_name": dataset_cfg.get("paper_name"),
            "synthetic": bool(dataset_cfg.get("synthetic", False)),
            "quirks": OmegaConf.to_container(dataset_cfg.quirks) if "quirks" in dataset_cfg else {},
            "domain": dataset_cfg.domain,
            "pretrain_dataset": domain.name,
            "algorithm": cfg.algorithm.name,
            "algorithm_settings": algorithm.settings(),
            "seed": cfg.seed,
            "metric": details["task"]["metric"],
            "value": value,
            "protocol": {
                "transfer_mode": cfg.transfer.mode,
                "transfer_epochs": cfg.transfer.epochs,
                "transfer_batch_size": cfg.transfer.batch_size or dataset_cfg.batch_size,
                "transfer_optimizer": OmegaConf.to_container(cfg.transfer.optimizer),
                "encoder_frozen": True,
                "pooling": cfg.model.pool,
                "split_evaluated": "test",
                **details,
            },
            "pretraining": {
                "dataset": domain.name,
                "quirks": OmegaConf.to_container(domain.quirks) if "quirks" in domain else {},
                "steps": steps,
                "batch_size": cfg.pretrain.batch_size or domain.batch_size,
                "optimizer": OmegaConf.to_container(cfg.pretrain.optimizer),
            },
            "encoder_checkpoint": str(output_dir / "encoder.pt"),
            "config": config,
            **_launch(),
            "versions": package_versions(),
            "git_commit": git_commit(),
            "timings": {"pretrain_s": round(pretrain_seconds, 3), "transfer_s": round(time.perf_counter() - t0, 3)},
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "host": os.uname().nodename,
        }
        path = record_path(results_dir, cfg.experiment_name, dataset_cfg.name, cfg.algorithm.name, cfg.seed)
        write_json_atomic(path, record)
        print(f"[dabs-rq] {dataset_cfg.name} {cfg.algorithm.name} seed={cfg.seed}: "
              f"{record['metric']} = {value:.2f}  -> {path}")
        records.append(record)
    return records
