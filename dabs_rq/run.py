"""One benchmark job: pretrain an encoder on a domain, then linear-probe each transfer dataset.

Every transfer evaluation writes one JSON record (see :mod:`dabs_rq.results.records`).
Everything is built from config by ``_target_`` instantiation; this module only
sequences the stages.
"""

from __future__ import annotations

import functools
import json
import logging
import shlex
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from dabs_rq.checkpointing import (AtomicCheckpointIO, Preempted, ResumableCheckpoint, RunState,
                                   config_differences, fingerprint)
from dabs_rq.data import domains, storage
from dabs_rq.data.datamodule import DomainDataModule
from dabs_rq.data.generic import schema
from dabs_rq.data.tensor_dataset import TensorInputsDataset, make_loader, save_tensors_atomic
from dabs_rq.distributed import check_launch, cluster_plugins, resolve_precision
from dabs_rq.encoder import build_encoder
from dabs_rq.errors import UserError, UserFileError
from dabs_rq.paths import DOMAINS_DIR
from dabs_rq.progress import StepProgressBar
from dabs_rq.paths import cache_dir as default_cache_dir
from dabs_rq.results.protocol import BATCH_SCOPES, dataset_settings, digest, portable
from dabs_rq.results.records import build_record, record_path, write_json_atomic
from dabs_rq.results.table import resolve_results_dir
from dabs_rq.tasks import CORRELATION_AGGREGATES
from dabs_rq.transfer import TRANSFER_MODES, LinearProbe

#: ``pretrain.lr_scaling``: ``none`` keeps the configured rate whatever the device count;
#: ``linear`` multiplies it by the number of processes (the batch grows with them).
LR_SCALINGS = ("none", "linear")


# Lightning's per-trainer banners (GPU available, tips) drown the progress output of a sweep.
for _name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# In-memory datasets need no loader workers; the hint is noise for them.
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
# Epoch metrics are torchmetrics objects, already gathered across ranks when computed.
warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")
# Cached-feature probes have a handful of large batches per epoch; the logging-interval hint is noise.
warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
# Lightning's own pytree helper builds a torch LeafSpec, which torch >= 2.10 deprecates (once per job).
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                        module=r"pytorch_lightning\.utilities\._pytree")


#: Free space a job needs in its results and job folders before it starts (records, checkpoints).
MIN_FREE_BYTES = 64 * 2**20


def _check_writable(folder: Path, what: str, key: str) -> None:
    """Fail before any training if results or checkpoints cannot be stored there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
        free = shutil.disk_usage(folder).free
    except OSError as err:
        raise UserFileError(f"{what} {folder} is not writable ({err.strerror or err}); set {key}=<folder>") from None
    if free < MIN_FREE_BYTES:
        raise UserFileError(f"{what} {folder} has only {free / 2**20:.0f} MiB free (a job needs at least "
                            f"{MIN_FREE_BYTES // 2**20} MiB); free space or set {key}=<folder>")


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
    storage.check_on_corrupt(cfg.on_corrupt)
    if not isinstance(cfg.get("overwrite", False), bool):
        raise UserError(f"overwrite must be true or false, got {cfg.overwrite!r}")
    if cfg.transfer.mode not in TRANSFER_MODES:
        raise UserError(f"transfer.mode must be one of {', '.join(TRANSFER_MODES)}; got {cfg.transfer.mode!r}")
    for key, value in (("pretrain.max_steps", cfg.pretrain.max_steps), ("transfer.epochs", cfg.transfer.epochs)):
        if not isinstance(value, int) or value <= 0:
            raise UserError(f"{key} must be a positive integer, got {value!r}")
    for key in ("pretrain.batch_size", "transfer.batch_size"):
        value = OmegaConf.select(cfg, key)
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise UserError(f"{key} must be a positive integer or null, got {value!r}")
    for key, valid in (("batch_scope", BATCH_SCOPES), ("transfer.correlation", CORRELATION_AGGREGATES)):
        if OmegaConf.select(cfg, key) not in valid:
            raise UserError(f"{key} must be one of {', '.join(valid)}; got {OmegaConf.select(cfg, key)!r}")
    if not isinstance(cfg.transfer.get("drop_last"), bool):
        raise UserError(f"transfer.drop_last must be true or false, got {cfg.transfer.get('drop_last')!r}")


def device_batch(cfg: DictConfig, batch_size: int, world_size: int, key: str) -> int:
    """The per-device batch of a configured batch size under ``batch_scope``.

    ``job`` (DABS): the batch is the job's effective batch, split evenly over the devices, so N
    devices (gathering each other's keys as negatives) train exactly like the one DABS GPU.
    ``device`` (opt-in): every device takes the whole batch; the effective batch is N times larger.
    """
    if cfg.batch_scope == "device" or world_size == 1:
        return batch_size
    if batch_size % world_size:
        raise UserError(f"{key} = {batch_size} (the job's effective batch) does not divide over {world_size} "
                         f"devices; use a device count that divides it, set {key} to a multiple of {world_size}, "
                         f"or batch_scope=device to give every device the whole batch")
    return batch_size // world_size


def build_task(dataset_cfg: DictConfig, cfg: DictConfig) -> Any:
    """The dataset's task; a correlation task gets ``transfer.correlation`` unless its YAML pins one."""
    extra = {}
    try:
        uses_correlation = getattr(get_class(str(dataset_cfg.task._target_)), "uses_correlation", False)
    except (ImportError, ValueError):  # instantiate below names the bad target
        uses_correlation = False
    if uses_correlation and "correlation" not in dataset_cfg.task:
        extra["correlation"] = cfg.transfer.correlation
    return instantiate(dataset_cfg.task, **extra)


def _trainer(cfg: DictConfig, logger: Any, **overrides: Any) -> pl.Trainer:
    """The configured Lightning Trainer: precision ``auto`` resolved, cluster environment and
    atomic checkpoint IO plugged in, our own per-rank samplers kept (``use_distributed_sampler``)."""
    settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    settings["precision"] = resolve_precision(settings.get("precision", "32-true"), str(settings.get("accelerator")))
    plugins = [*cluster_plugins(), AtomicCheckpointIO()]
    settings.update(overrides)
    return instantiate(settings, logger=logger if logger is not None else False, plugins=plugins,
                       use_distributed_sampler=False)


def _quiet_trainer(cfg: DictConfig, logger: Any, **overrides: Any) -> pl.Trainer:
    """A trainer for the transfer stages: the test split scored after every epoch (DABS's validation loop,
    no sanity pass), no progress bar in cached mode (one summary line is printed instead)."""
    return _trainer(cfg, logger, enable_progress_bar=cfg.transfer.mode == "online", check_val_every_n_epoch=1,
                    num_sanity_val_steps=0, **overrides)


@torch.inference_mode()
def extract_features(encoder: torch.nn.Module, loader: DataLoader, device: torch.device,
                     precision: Any) -> TensorInputsDataset:
    """Pooled features of a whole split with the encoder in eval mode (every rank computes all of them).

    ``precision`` is the trainer's precision plugin: its ``forward_context`` is the autocast of
    the configured precision (none for full float32).
    """
    was_training = encoder.training
    encoder.eval().to(device)
    features, labels = [], []
    try:
        for inputs, y in loader:
            with precision.forward_context():
                out = encoder(tuple(x.to(device, non_blocking=True) for x in inputs))
            features.append(out.float().cpu())
            labels.append(y)
    finally:
        encoder.train(was_training)
    return TensorInputsDataset([torch.cat(features)], torch.cat(labels))


#: The splits read in this process, per (cache folder, dataset name, dataset fingerprint): every stage
#: of a job (checks, pretraining, transfer) reads a split once.
_LOADED: dict[tuple, dict] = {}


def datamodule(cfg: DictConfig, dataset_cfg: DictConfig, cache: Path, batch_size: int | None = None,
               rank: int = 0, world_size: int = 1) -> DomainDataModule:
    """``dataset_cfg``'s data as this run reads it: its data root, workers, corrupt-file policy, seed.

    Datamodules of the same dataset definition share their loaded splits (read once per process).
    """
    key = (str(cache), str(cfg.data_root), cfg.on_corrupt, digest(OmegaConf.to_container(dataset_cfg, resolve=True)))
    return DomainDataModule(dataset_cfg, cache, num_workers=cfg.pretrain.num_workers, batch_size=batch_size,
                            data_root=cfg.data_root, download=cfg.download, seed=cfg.seed, rank=rank,
                            world_size=world_size, on_corrupt=cfg.on_corrupt, splits=_LOADED.setdefault(key, {}))


def effective_lr(cfg: DictConfig, world_size: int) -> float:
    """The learning rate used: ``pretrain.optimizer.lr``, times the device count with ``linear`` scaling."""
    lr = float(cfg.pretrain.optimizer.lr)
    scaling = cfg.pretrain.get("lr_scaling", "none")
    if scaling not in LR_SCALINGS:
        raise UserError(f"pretrain.lr_scaling must be one of {', '.join(LR_SCALINGS)}; got {scaling!r}")
    return lr * world_size if scaling == "linear" else lr


def pretrain(cfg: DictConfig, algorithm: pl.LightningModule, data: DomainDataModule, logger: Any,
             checkpoint: ResumableCheckpoint) -> pl.Trainer:
    """Fit ``algorithm`` to ``pretrain.max_steps`` steps, resuming from ``checkpoint.path`` if it exists.

    Raises :class:`Preempted` (after saving) when a preemption signal stopped it.
    """
    bar = [StepProgressBar()] if cfg.trainer.get("enable_progress_bar", True) else []
    trainer = _trainer(cfg, logger, max_steps=cfg.pretrain.max_steps, max_epochs=-1, callbacks=[checkpoint, *bar])
    resume = checkpoint.path if checkpoint.path.exists() else None
    if resume is not None and trainer.is_global_zero:
        print(f"[dabs-rq] resuming pretraining from {resume}")
    trainer.fit(algorithm, train_dataloaders=data.pretrain_dataloader(), ckpt_path=resume, weights_only=True)
    if checkpoint.preempted is not None:
        checkpoint.forward_signal()
        raise Preempted(checkpoint.preempted, int(trainer.global_step), checkpoint.path)
    return trainer


def transfer(cfg: DictConfig, encoder: torch.nn.Module, dataset_cfg: DictConfig, cache: Path,
             logger: Any) -> tuple[float, dict]:
    """Linear-probe ``encoder`` on one transfer dataset; returns (metric value, details).

    The test split is scored after every training epoch (DABS's validation loop); every epoch's
    value is kept in the details and the last one is the result. The training loader drops its
    last partial batch when ``transfer.drop_last`` (DABS). Under DDP the batch follows
    ``batch_scope`` and the test metric is computed once over the whole test split (torchmetrics
    gathers every rank's part; no sample is repeated or left out).
    """
    task = build_task(dataset_cfg, cfg)
    batch_size = cfg.transfer.batch_size or dataset_cfg.batch_size
    trainer = _quiet_trainer(cfg, logger, max_epochs=cfg.transfer.epochs)
    rank, world = trainer.global_rank, trainer.world_size
    per_device = device_batch(cfg, batch_size, world, "transfer.batch_size" if cfg.transfer.batch_size
                              else f"{dataset_cfg.name}'s batch_size")
    drop_last = bool(cfg.transfer.drop_last)
    data = datamodule(cfg, dataset_cfg, cache, per_device, rank, world)
    check_task_labels(dataset_cfg, task, data)
    n_train = len(data.split("train"))
    if drop_last and n_train < per_device * world:
        raise UserError(f"dataset {dataset_cfg.name}: transfer.drop_last=true with batch {batch_size} leaves no full "
                         f"batch of its {n_train} training examples; set transfer.batch_size below {n_train} "
                         f"or transfer.drop_last=false")
    encoder.requires_grad_(False)
    if cfg.transfer.mode == "cached_features":
        device, precision = trainer.strategy.root_device, trainer.precision_plugin
        train_set = extract_features(encoder, data.full_dataloader("train"), device, precision)
        test_set = extract_features(encoder, data.full_dataloader("test"), device, precision)
        loader = functools.partial(make_loader, batch_size=per_device, seed=cfg.seed, rank=rank, world_size=world)
        train_loader = loader(train_set, shuffle=True, drop_last=drop_last)
        test_loader = loader(test_set, shuffle=False, drop_last=False)
        probe_encoder = None
    else:
        train_loader, test_loader = data.train_dataloader(drop_last=drop_last), data.test_dataloader()
        probe_encoder = encoder
    probe = LinearProbe(encoder.dim, task, instantiate(cfg.transfer.optimizer), encoder=probe_encoder)
    trainer.fit(probe, train_dataloaders=train_loader, val_dataloaders=test_loader)
    details = {"n_train": n_train, "n_test": len(data.split("test")), "task": task.describe(),
               # examples each split left out, by reason (the readers' counted skips; see dabs_rq.data.storage)
               "excluded": {split: dict(getattr(data.split(split), "excluded", {})) for split in ("train", "test")},
               "world_size": world, "batch_size": batch_size, "device_batch_size": per_device,
               "drop_last": drop_last, "precision": str(trainer.precision),
               "epoch_values": [round(v, 6) for v in probe.epoch_values],
               "reported_epoch": "last: the test metric after the final training epoch (every epoch's value "
                                 "is in epoch_values)"}
    return probe.epoch_values[-1], details


def check_task_labels(dataset_cfg: DictConfig, task: Any, data: DomainDataModule) -> None:
    """A task that cannot hold the dataset's labels (too few classes, ...) is a config error, named."""
    for split in ("train", "test"):
        labels = getattr(data.split(split), "labels", None)
        problem = task.check_labels(torch.as_tensor(labels)) if labels is not None else None
        if problem:
            raise UserError(f"dataset {dataset_cfg.name} ({split} split): {problem}; fix 'task' in its YAML")


def check_inputs(dataset_cfg: DictConfig, encoder: torch.nn.Module, data: DomainDataModule) -> None:
    """Data whose examples do not fit the encoder's embedders (channels, length, size) is a config error, named."""
    split = data.split("train")
    if len(split) == 0:
        return
    problem = encoder.embedding.input_problem(split[0][0])
    if problem:
        raise UserError(f"dataset {dataset_cfg.name}: {problem}; fix 'inputs' in its YAML or the data")


def job_datasets(cfg: DictConfig) -> tuple[DictConfig, list[DictConfig]]:
    """The job's validated pretraining domain and transfer datasets, with ``dataset_overrides`` merged."""
    overrides = OmegaConf.to_container(cfg.dataset_overrides) if cfg.get("dataset_overrides") else {}
    domain = domains.load(cfg.domain, cfg.extra_domain_dirs, role="pretrain", overrides=overrides.get(cfg.domain))
    return domain, domains.transfer_datasets(domain, cfg.extra_domain_dirs, overrides)


def validate_job(cfg: DictConfig) -> None:
    """Everything about a job that can be checked without reading data or training: its settings, its
    dataset YAMLs (generic readers' schemas included), its encoder, algorithm, optimizers and tasks, and
    that its datasets are on disk. Raises the first :class:`UserError` found.

    A sweep runs this for every job before the first one starts (:mod:`dabs_rq.sweep_check`); ``run``
    checks the same things (and the data itself) as it goes.
    """
    _validate(cfg)
    domain, transfer_sets = job_datasets(cfg)
    encoder = build_encoder(cfg.model, domain.inputs)
    algorithm = instantiate(cfg.algorithm.module, encoder=encoder,
                            optimizer=instantiate(cfg.pretrain.optimizer))
    instantiate(cfg.transfer.optimizer)
    effective_lr(cfg, 1)
    for dataset_cfg in transfer_sets:
        build_task(dataset_cfg, cfg)
    require_data(cfg, ([domain] if algorithm.requires_pretraining else []) + transfer_sets)


def require_data(cfg: DictConfig, datasets: list[DictConfig]) -> None:
    """Every dataset a job reads is on disk (or downloadable with ``download=true``), else a one-line error."""
    root = storage.data_root(cfg.data_root)
    for dataset_cfg in datasets:
        if "data" in dataset_cfg:
            storage.require(dataset_cfg, root, cfg.download)


def _existing_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _check_records_free(cfg: DictConfig, identities: dict[Path, dict]) -> None:
    """Refuse, before any work, to replace a stored record that came from a different config or dataset
    definition (``identities``: record path -> the config with its ``datasets`` this run would store)."""
    if cfg.get("overwrite", False):
        return
    for path, identity in identities.items():
        if not path.exists():
            continue
        old = _existing_record(path) or {}
        old_config = old.get("config")
        if isinstance(old_config, dict):
            old_identity = {**old_config, **({"datasets": old["datasets"]} if "datasets" in old else {})}
            diff = "; ".join(config_differences(old_identity, identity))
        else:
            diff = "unreadable record"
        if not diff:
            print(f"[dabs-rq] will replace {path} (a result of the same config)")
            continue
        raise UserError(f"{path} already holds a result of another config ({diff}); "
                         f"use another experiment_name, or overwrite=true to replace it")


def _path_roots(cfg: DictConfig) -> dict[str, Any]:
    """Folders whose absolute paths records write by name (see :func:`dabs_rq.results.protocol.portable`)."""
    roots = {"data_root": storage.data_root(cfg.data_root), "domains": DOMAINS_DIR, "cwd": Path.cwd(),
             "home": Path.home()}
    roots.update({f"extra_domain_dirs[{i}]": d for i, d in enumerate(cfg.extra_domain_dirs or [])})
    return roots


def run(cfg: DictConfig) -> list[dict]:
    """Pretrain (unless the algorithm needs none) and evaluate every transfer dataset of ``cfg.domain``
    (see :func:`_run`); the splits it read are released when it returns (a sweep runs many jobs in one
    process)."""
    _LOADED.clear()
    try:
        return _run(cfg)
    finally:
        _LOADED.clear()


def _run(cfg: DictConfig) -> list[dict]:
    """Pretrain (unless the algorithm needs none) and evaluate every transfer dataset of ``cfg.domain``.

    Re-running the same job resumes it: finished pretraining and transfer datasets are skipped,
    unfinished pretraining continues from its last checkpoint, and a transfer whose dataset YAML
    changed since its record was written is pending again (its stored record of the old definition
    is replaced only with ``overwrite=true``).
    """
    _validate(cfg)
    results_dir = resolve_results_dir(cfg.results_dir)
    _check_writable(results_dir, "results directory", "results_dir")
    cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    output_dir = Path(cfg.output_dir)
    _check_writable(output_dir, "job folder", "hydra.run.dir")
    domain, transfer_sets = job_datasets(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    roots, pretrain_yaml = _path_roots(cfg), OmegaConf.to_container(domain, resolve=True)
    datasets = {d.name: dataset_settings(pretrain_yaml, OmegaConf.to_container(d, resolve=True), roots)
                for d in transfer_sets}
    dataset_fingerprints = {name: digest(settings) for name, settings in datasets.items()}
    # The pretraining dataset's definition is part of the job: another one is another job.
    state = RunState(output_dir, {**config, "pretrain_dataset": portable(pretrain_yaml, roots)}).load()

    def record_of(name: str) -> Path:
        return record_path(results_dir, cfg.experiment_name, name, cfg.algorithm.name, cfg.seed)

    done = [d for d in transfer_sets
            if state.transfer_done(d.name, dataset_fingerprints[d.name]) and record_of(d.name).exists()]
    pending = [d for d in transfer_sets if d not in done]
    _check_records_free(cfg, {record_of(d.name): {**config, "datasets": datasets[d.name]} for d in pending})
    records = [_existing_record(record_of(d.name)) for d in done]
    if not pending:
        print(f"[dabs-rq] {cfg.domain} {cfg.algorithm.name} seed={cfg.seed}: already finished "
              f"({len(done)} records); nothing to do")
        return records

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    encoder = build_encoder(cfg.model, domain.inputs)
    probe_trainer = _trainer(cfg, None)
    world = probe_trainer.world_size
    check_launch(world)
    lr = effective_lr(cfg, world)
    optimizer = instantiate(cfg.pretrain.optimizer, lr=lr)
    algorithm = instantiate(cfg.algorithm.module, encoder=encoder, optimizer=optimizer)
    must_pretrain = algorithm.requires_pretraining and not state.pretrain_done
    batch_size = int(cfg.pretrain.batch_size or domain.batch_size)
    per_device_batch = device_batch(cfg, batch_size, world, "pretrain.batch_size" if cfg.pretrain.batch_size
                                    else f"{domain.name}'s batch_size")
    for dataset_cfg in pending:  # a bad task setting (e.g. an unknown metric) fails now, not after pretraining
        task = build_task(dataset_cfg, cfg)
        if schema(str(dataset_cfg.reader._target_)) is not None:  # generic readers: user data, cheap to check now
            data = datamodule(cfg, dataset_cfg, cache)
            check_inputs(dataset_cfg, encoder, data)
            check_task_labels(dataset_cfg, task, data)
    if must_pretrain and schema(str(domain.reader._target_)) is not None:
        check_inputs(domain, encoder, datamodule(cfg, domain, cache))
    require_data(cfg, ([domain] if must_pretrain else []) + pending)  # before any training starts
    logger = instantiate(cfg.logger) if cfg.get("logger") else None
    checkpoint = ResumableCheckpoint(output_dir / "checkpoints", cfg.pretrain.get("checkpoint_every_n_steps"),
                                     cfg.pretrain.get("checkpoint_every_minutes"))

    encoder_path = output_dir / "encoder.pt"
    if must_pretrain:
        data = datamodule(cfg, domain, cache, per_device_batch, probe_trainer.global_rank, world)
        started = time.perf_counter()
        trainer = pretrain(cfg, algorithm, data, logger, checkpoint)
        excluded = dict(getattr(data.split("train"), "excluded", {}))
        if trainer.is_global_zero:
            save_tensors_atomic(encoder.state_dict(), encoder_path)
            state.mark_pretrained(trainer.global_step, time.perf_counter() - started, excluded)
        steps, pretrain_seconds = int(trainer.global_step), time.perf_counter() - started
    elif algorithm.requires_pretraining:
        print(f"[dabs-rq] pretraining already finished; loading {encoder_path}")
        encoder.load_state_dict(torch.load(encoder_path, map_location="cpu", weights_only=True))
        steps, pretrain_seconds = state.data["pretrain_steps"], state.data["pretrain_seconds"]
        excluded = state.data["pretrain_excluded"]
    else:
        steps, pretrain_seconds, excluded = 0, 0.0, {}
        if probe_trainer.is_global_zero:
            save_tensors_atomic(encoder.state_dict(), encoder_path)

    pretraining = {"dataset": domain.name, "steps": steps, "seconds": pretrain_seconds, "excluded": excluded,
                   "batch_size": batch_size,
                   "device_batch_size": per_device_batch, "world_size": world, "lr": lr,
                   "precision": str(probe_trainer.precision)}
    for dataset_cfg in pending:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        t0 = time.perf_counter()
        value, details = transfer(cfg, encoder, dataset_cfg, cache, logger)
        record = build_record(cfg, config, domain, dataset_cfg, algorithm, value, details, pretraining,
                              datasets[dataset_cfg.name], transfer_seconds=time.perf_counter() - t0,
                              job_dir=output_dir, launch=_launch())
        path = record_of(dataset_cfg.name)
        if probe_trainer.is_global_zero:
            write_json_atomic(path, record)
            state.mark_transferred(dataset_cfg.name, dataset_fingerprints[dataset_cfg.name])
            print(f"[dabs-rq] {dataset_cfg.name} {cfg.algorithm.name} seed={cfg.seed}: "
                  f"{record['metric']} = {value:.2f}  -> {path}")
        records.append(record)
    return records
