"""One benchmark job, as named stages: pretrain an encoder on a domain, then linear-probe each
transfer dataset and write one JSON record per dataset (:mod:`dabs_rq.results.records`).

:func:`run` reads top to bottom: :func:`plan` (check the settings, read what is already finished)
-> :func:`check_data` (user data against the encoder and the tasks) -> :func:`pretrain` ->
for each pending dataset :func:`transfer` -> :func:`build_record` -> :func:`write_result`.
Everything is built from config by ``_target_`` instantiation; this module only sequences it.
"""

from __future__ import annotations

import functools
import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar

from dabs_rq.checkpointing import AtomicCheckpointIO, Preempted, ResumableCheckpoint, RunState
from dabs_rq.checks import (
    build_task,
    check_inputs,
    check_records_free,
    check_settings,
    check_task_labels,
    check_writable,
    device_batch,
    effective_lr,
    job_datasets,
    read_record,
    require_data,
    requires_pretraining,
)
from dabs_rq.data import storage
from dabs_rq.data.datamodule import DomainDataModule
from dabs_rq.data.generic import schema
from dabs_rq.data.tensor_dataset import make_loader, save_tensors_atomic
from dabs_rq.distributed import check_launch, cluster_plugins, is_launch_rank_zero, rank_zero_info, resolve_precision
from dabs_rq.encoder import build_encoder
from dabs_rq.errors import UserError
from dabs_rq.io import write_json_atomic
from dabs_rq.paths import DOMAINS_DIR, resolve_results_dir
from dabs_rq.paths import cache_dir as default_cache_dir
from dabs_rq.progress import StepProgressBar
from dabs_rq.results.protocol import dataset_identity, dataset_settings, digest, portable
from dabs_rq.results.records import build_record, record_path
from dabs_rq.transfer import LinearProbe, extract_features

log = logging.getLogger(__name__)
info = functools.partial(rank_zero_info, log)


def make_trainer(cfg: DictConfig, logger: Any = None, progress: bool = True, **stage: Any) -> pl.Trainer:
    """The one Trainer factory: ``cfg.trainer`` with precision ``auto`` resolved, the cluster environment
    and atomic checkpoint IO plugged in, our own per-rank samplers kept (``use_distributed_sampler``),
    a progress bar only if ``progress`` and the config allow it, and the stage's own ``stage`` settings."""
    settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    settings["precision"] = resolve_precision(settings.get("precision", "32-true"), str(settings.get("accelerator")))
    settings["enable_progress_bar"] = bool(settings.get("enable_progress_bar", True) and progress)
    callbacks = list(stage.get("callbacks", []))
    if not settings["enable_progress_bar"]:
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    elif not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(TQDMProgressBar())  # one bar style for every stage (Lightning would pick Rich's if installed)
    stage["callbacks"] = callbacks
    settings.update(stage)
    trainer = instantiate(
        settings,
        logger=logger if logger is not None else False,
        plugins=[*cluster_plugins(), AtomicCheckpointIO()],
        use_distributed_sampler=False,
    )
    check_launch(trainer.world_size)
    return trainer


#: The splits read in this process, per (cache folder, data root, corrupt policy, dataset definition):
#: every stage of a job (checks, pretraining, transfer) reads a split once.
_LOADED: dict[tuple, dict] = {}


def datamodule(
    cfg: DictConfig,
    dataset_cfg: DictConfig,
    cache: Path,
    batch_size: int | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> DomainDataModule:
    """``dataset_cfg``'s data as this run reads it: its data root, workers, corrupt-file policy, seed."""
    key = (str(cache), str(cfg.data_root), cfg.on_corrupt, digest(OmegaConf.to_container(dataset_cfg, resolve=True)))
    return DomainDataModule(
        dataset_cfg,
        cache,
        num_workers=cfg.pretrain.num_workers,
        batch_size=batch_size,
        data_root=cfg.data_root,
        download=cfg.download,
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        on_corrupt=cfg.on_corrupt,
        splits=_LOADED.setdefault(key, {}),
    )


@dataclass
class Job:
    """What one job computes and where it keeps things; :func:`plan` makes it."""

    cfg: DictConfig
    config: dict  # the resolved config
    domain: DictConfig  # the pretraining dataset's YAML
    transfer_sets: list[DictConfig]
    datasets: dict[str, dict]  # per transfer dataset: the settings its record stores (both YAMLs, portable)
    results_dir: Path
    output_dir: Path
    cache: Path
    state: RunState

    @property
    def encoder_path(self) -> Path:
        return self.output_dir / "encoder.pt"

    def record_path(self, dataset: str) -> Path:
        return record_path(self.results_dir, self.cfg.experiment_name, dataset, self.cfg.algorithm.name, self.cfg.seed)

    def dataset_fingerprint(self, dataset: str) -> str:
        return digest(self.datasets[dataset])

    def finished(self, dataset_cfg: DictConfig) -> bool:
        """Its record exists and was made from this dataset definition (a changed YAML: pending again)."""
        name = dataset_cfg.name
        return self.state.transfer_done(name, self.dataset_fingerprint(name)) and self.record_path(name).exists()

    @property
    def pending(self) -> list[DictConfig]:
        return [d for d in self.transfer_sets if not self.finished(d)]


def plan(cfg: DictConfig) -> Job:
    """Stage 1: the settings, folders and dataset YAMLs checked; what is already finished read from the job
    folder (another config in it is refused); stored records of another config are never replaced silently."""
    check_settings(cfg)
    results_dir = resolve_results_dir(cfg.results_dir)
    check_writable(results_dir, "results directory", "results_dir")
    output_dir = Path(cfg.output_dir)
    check_writable(output_dir, "job folder", "hydra.run.dir")
    domain, transfer_sets = job_datasets(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    roots, pretrain_yaml = path_roots(cfg), OmegaConf.to_container(domain, resolve=True)
    datasets = {
        d.name: dataset_settings(pretrain_yaml, OmegaConf.to_container(d, resolve=True), roots) for d in transfer_sets
    }
    # The pretraining dataset's definition is part of the job: another one is another job.
    state = RunState(
        output_dir, {**config, "pretrain_dataset": portable(dataset_identity(pretrain_yaml), roots)}
    ).load()
    cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    job = Job(cfg, config, domain, transfer_sets, datasets, results_dir, output_dir, cache, state)
    check_records_free(cfg, {job.record_path(d.name): {**config, "datasets": datasets[d.name]} for d in job.pending})
    return job


def path_roots(cfg: DictConfig) -> dict[str, Any]:
    """Folders whose absolute paths records write by name (see :func:`dabs_rq.results.protocol.portable`)."""
    roots = {
        "data_root": storage.data_root(cfg.data_root),
        "domains": DOMAINS_DIR,
        "cwd": Path.cwd(),
        "home": Path.home(),
    }
    roots.update({f"extra_domain_dirs[{i}]": d for i, d in enumerate(cfg.extra_domain_dirs or [])})
    return roots


def check_data(job: Job, encoder: torch.nn.Module, pending: list[DictConfig]) -> None:
    """Stage 2, before any training: user data (generic readers, cheap to read) fits the encoder's inputs and
    its task's labels; every dataset the job reads is on disk. A bad task setting fails here too."""
    cfg, must_pretrain = job.cfg, requires_pretraining(job.cfg) and not job.state.pretrain_done
    for dataset_cfg in pending:
        task = build_task(dataset_cfg, cfg)
        if schema(str(dataset_cfg.reader._target_)) is not None:
            data = datamodule(cfg, dataset_cfg, job.cache)
            check_inputs(dataset_cfg, encoder, data)
            check_task_labels(dataset_cfg, task, data)
    if must_pretrain and schema(str(job.domain.reader._target_)) is not None:
        check_inputs(job.domain, encoder, datamodule(cfg, job.domain, job.cache))
    require_data(cfg, ([job.domain] if must_pretrain else []) + pending)


def build_algorithm(cfg: DictConfig, encoder: torch.nn.Module, world_size: int = 1) -> pl.LightningModule:
    """The configured pretraining algorithm around ``encoder``, its optimizer at the job's learning rate."""
    optimizer = instantiate(cfg.pretrain.optimizer, lr=effective_lr(cfg, world_size))
    return instantiate(cfg.algorithm.module, encoder=encoder, optimizer=optimizer)


def pretrain(job: Job, encoder: torch.nn.Module, logger: Any) -> tuple[pl.LightningModule, dict]:
    """Stage 3: pretrain ``encoder`` to ``pretrain.max_steps`` (resuming from the job's checkpoint), or load
    the finished one, or keep the initial one (``none``). Returns the algorithm and what pretraining did
    (``steps``, ``seconds``, ``excluded``: the examples its data left out, by reason).

    Raises :class:`Preempted` (after saving) when a preemption signal stopped it.
    """
    cfg, state = job.cfg, job.state
    if not requires_pretraining(cfg):
        if is_launch_rank_zero():
            save_tensors_atomic(encoder.state_dict(), job.encoder_path)
        return build_algorithm(cfg, encoder), {"steps": 0, "seconds": 0.0, "excluded": {}}
    if state.pretrain_done:
        info("pretraining already finished; loading %s", job.encoder_path)
        encoder.load_state_dict(torch.load(job.encoder_path, map_location="cpu", weights_only=True))
        return build_algorithm(cfg, encoder), {
            "steps": state.data["pretrain_steps"],
            "seconds": state.data["pretrain_seconds"],
            "excluded": state.data["pretrain_excluded"],
        }
    checkpoint = ResumableCheckpoint(
        job.output_dir / "checkpoints",
        cfg.pretrain.get("checkpoint_every_n_steps"),
        cfg.pretrain.get("checkpoint_every_minutes"),
    )
    trainer = make_trainer(
        cfg, logger, max_steps=cfg.pretrain.max_steps, max_epochs=-1, callbacks=[checkpoint, StepProgressBar()]
    )
    algorithm = build_algorithm(cfg, encoder, trainer.world_size)
    per_device = device_batch(
        cfg, pretrain_batch(cfg, job.domain), trainer.world_size, _batch_key(cfg, job.domain, "pretrain")
    )
    data = datamodule(cfg, job.domain, job.cache, per_device, trainer.global_rank, trainer.world_size)
    resume = checkpoint.path if checkpoint.path.exists() else None
    if resume is not None:
        info("resuming pretraining from %s", resume)
    started = time.perf_counter()
    trainer.fit(algorithm, train_dataloaders=data.pretrain_dataloader(), ckpt_path=resume, weights_only=True)
    if checkpoint.preempted is not None:
        checkpoint.forward_signal()
        raise Preempted(checkpoint.preempted, int(trainer.global_step), checkpoint.path)
    done = {
        "steps": int(trainer.global_step),
        "seconds": time.perf_counter() - started,
        "excluded": dict(getattr(data.split("train"), "excluded", {})),
    }
    if trainer.is_global_zero:
        save_tensors_atomic(encoder.state_dict(), job.encoder_path)
        state.mark_pretrained(**done)
    return algorithm, done


def pretrain_batch(cfg: DictConfig, domain: DictConfig) -> int:
    """The job's effective pretraining batch: ``pretrain.batch_size``, else the domain YAML's."""
    return int(cfg.pretrain.batch_size or domain.batch_size)


def _batch_key(cfg: DictConfig, dataset_cfg: DictConfig, stage: str) -> str:
    """The setting that decided a stage's batch size (named in a batch-split error)."""
    return f"{stage}.batch_size" if cfg[stage].batch_size else f"{dataset_cfg.name}'s batch_size"


def transfer(job: Job, encoder: torch.nn.Module, dataset_cfg: DictConfig, logger: Any) -> tuple[float, dict]:
    """Stage 4: linear-probe the frozen ``encoder`` on one transfer dataset; returns (metric value, details).

    The test split is scored after every training epoch (DABS's validation loop); every epoch's
    value is kept in the details and the last one is the result. The training loader drops its
    last partial batch when ``transfer.drop_last`` (DABS). Under DDP the batch follows
    ``batch_scope``, cached features are extracted with the batches split over the ranks, and the test
    metric is computed once over the whole test split (torchmetrics gathers every rank's part).
    """
    cfg = job.cfg
    task = build_task(dataset_cfg, cfg)
    batch_size = cfg.transfer.batch_size or dataset_cfg.batch_size
    online = cfg.transfer.mode == "online"
    # Cached mode trains the head in a few seconds: no bar for it (its result is one line).
    trainer = make_trainer(
        cfg, logger, progress=online, max_epochs=cfg.transfer.epochs, check_val_every_n_epoch=1, num_sanity_val_steps=0
    )
    rank, world = trainer.global_rank, trainer.world_size
    per_device = device_batch(cfg, batch_size, world, _batch_key(cfg, dataset_cfg, "transfer"))
    drop_last = bool(cfg.transfer.drop_last)
    data = datamodule(cfg, dataset_cfg, job.cache, per_device, rank, world)
    check_task_labels(dataset_cfg, task, data)
    n_train = len(data.split("train"))
    if drop_last and n_train < per_device * world:
        raise UserError(
            f"dataset {dataset_cfg.name}: transfer.drop_last=true with batch {batch_size} leaves no full "
            f"batch of its {n_train} training examples; set transfer.batch_size below {n_train} "
            f"or transfer.drop_last=false"
        )
    encoder.requires_grad_(False)
    if online:
        train_loader, test_loader = data.train_dataloader(drop_last=drop_last), data.test_dataloader()
    else:
        extractor = make_trainer(cfg)
        train_set, test_set = (
            extract_features(extractor, encoder, data.split(split), per_device, data.num_workers)
            for split in ("train", "test")
        )
        loader = functools.partial(make_loader, batch_size=per_device, seed=cfg.seed, rank=rank, world_size=world)
        train_loader = loader(train_set, shuffle=True, drop_last=drop_last)
        test_loader = loader(test_set, shuffle=False, drop_last=False)
    probe = LinearProbe(
        encoder.dim,
        task,
        instantiate(cfg.transfer.optimizer),
        encoder=encoder if online else None,
        dataset=dataset_cfg.name,
    )
    trainer.fit(probe, train_dataloaders=train_loader, val_dataloaders=test_loader)
    details = {
        "n_train": n_train,
        "n_test": len(data.split("test")),
        "task": task.describe(),
        # examples each split left out, by reason (the readers' counted skips; see dabs_rq.data.storage)
        "excluded": {split: dict(getattr(data.split(split), "excluded", {})) for split in ("train", "test")},
        "world_size": world,
        "batch_size": batch_size,
        "device_batch_size": per_device,
        "drop_last": drop_last,
        "precision": str(trainer.precision),
        "epoch_values": [round(v, 6) for v in probe.epoch_values],
        "reported_epoch": "last: the test metric after the final training epoch (every epoch's value "
        "is in epoch_values)",
    }
    return probe.epoch_values[-1], details


def pretraining_summary(job: Job, done: dict, world_size: int, precision: str) -> dict:
    """What a record says about the job's pretraining: its dataset, batch, learning rate and devices, and
    ``done`` (steps, seconds, examples left out)."""
    batch = pretrain_batch(job.cfg, job.domain)
    return {
        "dataset": job.domain.name,
        **done,
        "batch_size": batch,
        "device_batch_size": device_batch(job.cfg, batch, world_size, _batch_key(job.cfg, job.domain, "pretrain")),
        "world_size": world_size,
        "lr": effective_lr(job.cfg, world_size),
        "precision": precision,
    }


def launch() -> dict:
    """How this job was started: the command typed and this job's own overrides (when run by Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {"command": None, "job_overrides": None}
    return {
        "command": " ".join(["dabs-rq", *(shlex.quote(arg) for arg in sys.argv[1:])]),
        "job_overrides": list(HydraConfig.get().overrides.task),
    }


def write_result(job: Job, dataset_cfg: DictConfig, record: dict) -> dict:
    """Stage 6: the record stored (by global rank 0) and the dataset marked finished in the job's state."""
    path = job.record_path(dataset_cfg.name)
    if is_launch_rank_zero():
        write_json_atomic(path, record)
        job.state.mark_transferred(dataset_cfg.name, job.dataset_fingerprint(dataset_cfg.name))
    info(
        "%s %s seed=%s: %s = %.2f  -> %s",
        dataset_cfg.name,
        job.cfg.algorithm.name,
        job.cfg.seed,
        record["metric"],
        record["value"],
        path,
    )
    return record


def run(cfg: DictConfig) -> list[dict]:
    """Pretrain (unless the algorithm needs none) and evaluate every transfer dataset of ``cfg.domain``.

    Re-running the same job resumes it: finished pretraining and transfer datasets are skipped,
    unfinished pretraining continues from its last checkpoint, and a transfer whose dataset YAML
    changed since its record was written is pending again (its stored record of the old definition
    is replaced only with ``overwrite=true``). The splits it read are released when it returns (a
    sweep runs many jobs in one process).
    """
    _LOADED.clear()
    try:
        job = plan(cfg)
        pending = job.pending
        records = [read_record(job.record_path(d.name)) for d in job.transfer_sets if d not in pending]
        if not pending:
            info(
                "%s %s seed=%s: already finished (%d records); nothing to do",
                cfg.domain,
                cfg.algorithm.name,
                cfg.seed,
                len(records),
            )
            return records
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        encoder = build_encoder(cfg.model, job.domain.inputs)
        check_data(job, encoder, pending)
        logger = instantiate(cfg.logger) if cfg.get("logger") else None
        algorithm, done = pretrain(job, encoder, logger)
        for dataset_cfg in pending:
            pl.seed_everything(cfg.seed, workers=True, verbose=False)
            started = time.perf_counter()
            value, details = transfer(job, encoder, dataset_cfg, logger)
            pretraining = pretraining_summary(job, done, details["world_size"], details["precision"])
            record = build_record(
                cfg,
                job.config,
                job.domain,
                dataset_cfg,
                algorithm,
                value,
                details,
                pretraining,
                job.datasets[dataset_cfg.name],
                transfer_seconds=time.perf_counter() - started,
                job_dir=job.output_dir,
                launch=launch(),
            )
            records.append(write_result(job, dataset_cfg, record))
        return records
    finally:
        _LOADED.clear()
