"""What a job checks before it trains: settings, folders, datasets, tasks, inputs, stored records.

Every check raises :class:`dabs_rq.errors.UserError` with one line that names what is wrong and how
to fix it. A sweep runs :func:`validate_job` for every job before it starts the first one
(:mod:`dabs_rq.sweep_check`); :func:`dabs_rq.run.run` runs the same checks, and the ones that read
data, before any training.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from dabs_rq.checkpointing import config_differences
from dabs_rq.data import domains, storage
from dabs_rq.distributed import rank_zero_info
from dabs_rq.encoder import build_encoder
from dabs_rq.errors import UserError, UserFileError
from dabs_rq.results.protocol import BATCH_SCOPES
from dabs_rq.tasks import CORRELATION_AGGREGATES
from dabs_rq.transfer import TRANSFER_MODES

log = logging.getLogger(__name__)

#: ``pretrain.lr_scaling``: ``none`` keeps the configured rate whatever the device count;
#: ``linear`` multiplies it by the number of processes (the batch grows with them).
LR_SCALINGS = ("none", "linear")

#: Free space a job needs in its results and job folders before it starts (records, checkpoints).
MIN_FREE_BYTES = 64 * 2**20


def check_settings(cfg: DictConfig) -> None:
    """The run-level settings: policies, transfer mode, positive step/epoch/batch counts, scopes."""
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
    for key, valid in (
        ("batch_scope", BATCH_SCOPES),
        ("transfer.correlation", CORRELATION_AGGREGATES),
        ("pretrain.lr_scaling", LR_SCALINGS),
    ):
        if OmegaConf.select(cfg, key, default="none") not in valid:
            raise UserError(f"{key} must be one of {', '.join(valid)}; got {OmegaConf.select(cfg, key)!r}")
    if not isinstance(cfg.transfer.get("drop_last"), bool):
        raise UserError(f"transfer.drop_last must be true or false, got {cfg.transfer.get('drop_last')!r}")


def check_writable(folder: Path, what: str, key: str) -> None:
    """Fail before any training if results or checkpoints cannot be stored in ``folder``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
        free = shutil.disk_usage(folder).free
    except OSError as err:
        raise UserFileError(f"{what} {folder} is not writable ({err.strerror or err}); set {key}=<folder>") from None
    if free < MIN_FREE_BYTES:
        raise UserFileError(
            f"{what} {folder} has only {free / 2**20:.0f} MiB free (a job needs at least "
            f"{MIN_FREE_BYTES // 2**20} MiB); free space or set {key}=<folder>"
        )


def device_batch(cfg: DictConfig, batch_size: int, world_size: int, key: str) -> int:
    """The per-device batch of a configured batch size under ``batch_scope``.

    ``job`` (DABS): the batch is the job's effective batch, split evenly over the devices, so N
    devices (gathering each other's keys as negatives) train exactly like the one DABS GPU.
    ``device`` (opt-in): every device takes the whole batch; the effective batch is N times larger.
    """
    if cfg.batch_scope == "device" or world_size == 1:
        return batch_size
    if batch_size % world_size:
        raise UserError(
            f"{key} = {batch_size} (the job's effective batch) does not divide over {world_size} "
            f"devices; use a device count that divides it, set {key} to a multiple of {world_size}, "
            f"or batch_scope=device to give every device the whole batch"
        )
    return batch_size // world_size


def effective_lr(cfg: DictConfig, world_size: int) -> float:
    """The learning rate used: ``pretrain.optimizer.lr``, times the device count with ``linear`` scaling."""
    lr = float(cfg.pretrain.optimizer.lr)
    return lr * world_size if cfg.pretrain.get("lr_scaling", "none") == "linear" else lr


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


def check_task_labels(dataset_cfg: DictConfig, task: Any, data: Any) -> None:
    """A task that cannot hold the dataset's labels (too few classes, ...) is a config error, named."""
    for split in ("train", "test"):
        labels = getattr(data.split(split), "labels", None)
        problem = task.check_labels(torch.as_tensor(labels)) if labels is not None else None
        if problem:
            raise UserError(f"dataset {dataset_cfg.name} ({split} split): {problem}; fix 'task' in its YAML")


def check_inputs(dataset_cfg: DictConfig, encoder: torch.nn.Module, data: Any) -> None:
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


def requires_pretraining(cfg: DictConfig) -> bool:
    """Whether the configured algorithm trains the encoder (``none`` does not)."""
    return bool(getattr(get_class(str(cfg.algorithm.module._target_)), "requires_pretraining", True))


def require_data(cfg: DictConfig, datasets: list[DictConfig]) -> None:
    """Every dataset a job reads is on disk (or downloadable with ``download=true``), else a one-line error."""
    root = storage.data_root(cfg.data_root)
    for dataset_cfg in datasets:
        if "data" in dataset_cfg:
            storage.require(dataset_cfg, root, cfg.download)


def validate_job(cfg: DictConfig) -> None:
    """Everything about a job that can be checked without reading data or training: its settings, its
    dataset YAMLs (generic readers' schemas included), its encoder, algorithm, optimizers and tasks, and
    that its datasets are on disk. Raises the first :class:`UserError` found."""
    check_settings(cfg)
    domain, transfer_sets = job_datasets(cfg)
    encoder = build_encoder(cfg.model, domain.inputs)
    instantiate(cfg.algorithm.module, encoder=encoder, optimizer=instantiate(cfg.pretrain.optimizer))
    instantiate(cfg.transfer.optimizer)
    for dataset_cfg in transfer_sets:
        build_task(dataset_cfg, cfg)
    require_data(cfg, ([domain] if requires_pretraining(cfg) else []) + transfer_sets)


def check_records_free(cfg: DictConfig, identities: dict[Path, dict]) -> None:
    """Refuse, before any work, to replace a stored record that came from a different config or dataset
    definition (``identities``: record path -> the config with its ``datasets`` this run would store)."""
    if cfg.get("overwrite", False):
        return
    for path, identity in identities.items():
        if not path.exists():
            continue
        old = read_record(path) or {}
        old_config = old.get("config")
        if isinstance(old_config, dict):
            old_identity = {**old_config, **({"datasets": old["datasets"]} if "datasets" in old else {})}
            diff = "; ".join(config_differences(old_identity, identity))
        else:
            diff = "unreadable record"
        if not diff:
            rank_zero_info(log, "will replace %s (a result of the same config)", path)
            continue
        raise UserError(
            f"{path} already holds a result of another config ({diff}); "
            f"use another experiment_name, or overwrite=true to replace it"
        )


def read_record(path: Path) -> dict | None:
    """A stored JSON record, or None if it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
