"""A sweep's plan: its jobs as ``dabs-rq -m`` composes them, each job's steps, samples, transfers and
GPU-hours, and the caches they read (shared caches counted once).

GPU-hours = samples / per-GPU samples/s (linear scaling over a job's GPUs assumed), plus, with
``model.compile`` on, :data:`COMPILE_ALLOWANCE_S` per compiled stage (assumed).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dabs_rq.errors import UserError
from dabs_rq.plan.caches import CacheItem, cache_items
from dabs_rq.plan.datasets import examples, tokens
from dabs_rq.plan.throughput import ASSUMED, Bench

#: The encoder the ``encoder`` benchmark and the default throughput are of (``conf/model/dabs.yaml``).
DABS_ENCODER = {"dim": 256, "depth": 12, "heads": 8, "dim_head": 64, "mlp_dim": 512}
#: Seconds of ``torch.compile`` allowed per compiled stage (pretraining, each transfer dataset).
COMPILE_ALLOWANCE_S = 120.0


@dataclass
class TransferPlan:
    """One transfer dataset of a job: the probe and the encoder forward passes it costs."""

    dataset: str
    epochs: int
    mode: str
    train_examples: int | None
    test_examples: int | None
    examples_source: str
    forward_samples: int | None
    gpu_hours: float | None


@dataclass
class JobPlan:
    """One job of the sweep."""

    overrides: list[str]
    domain: str
    algorithm: str
    seed: int
    gpus: int
    precision: str
    pretrain_steps: int
    pretrain_batch: int
    pretrain_samples: int
    transfers: list[TransferPlan]
    pretrain_gpu_hours: float
    transfer_gpu_hours: float
    transfer_unknown: list[str]
    compile_gpu_hours: float
    gpu_hours: float
    pretrain_throughput: dict | None
    forward_throughput: dict
    notes: list[str]


def _mode_samples(
    train: int | None, test: int | None, mode: str, epochs: int, batch: int, drop_last: bool
) -> int | None:
    if train is None or test is None:
        return None
    if mode == "cached_features":  # features once; the head trains on them (no encoder passes)
        return train + test
    per_epoch = (train // batch) * batch if drop_last else train
    return epochs * (per_epoch + test)  # the test split is scored after every epoch


def compose_sweep(overrides: Sequence[str]) -> tuple[DictConfig, list[tuple[list[str], DictConfig]]]:
    """The multirun config of ``overrides`` and each job's overrides and config, as ``dabs-rq -m`` composes them."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf.errors import OmegaConfBaseException

    from dabs_rq.cli import check_group_choices
    from dabs_rq.paths import CONF_DIR
    from dabs_rq.sweep_check import sweep_jobs

    check_group_choices(list(overrides))
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            loader = GlobalHydra.instance().config_loader()
            config = loader.load_configuration("config", list(overrides), run_mode=RunMode.MULTIRUN)
            jobs = [(list(o), loader.load_sweep_config(config, list(o))) for o in sweep_jobs(config)]
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(str(err).strip().splitlines()[0]) from None
    return config, jobs


def plan_job(
    overrides: list[str], cfg: DictConfig, bench: Bench, memo: dict[str, Any] | None = None
) -> tuple[JobPlan, list[CacheItem]]:
    """One job's plan and the caches it reads (``memo``: dataset configs already loaded, by job settings)."""
    from omegaconf.errors import MissingMandatoryValue

    from dabs_rq.checks import check_settings, job_datasets, requires_pretraining

    memo = {} if memo is None else memo
    try:
        str(cfg.domain)
    except MissingMandatoryValue:
        raise UserError("domain is not set: give domain=<name> (or an experiment=... that sweeps domains)") from None
    check_settings(cfg)
    key = json.dumps(
        OmegaConf.to_container(OmegaConf.masked_copy(cfg, ["domain", "dataset_overrides", "extra_domain_dirs"])),
        sort_keys=True,
    )
    if key not in memo:  # the same datasets for every algorithm and seed of a domain
        memo[key] = job_datasets(cfg)
    domain, transfer_sets = memo[key]
    algorithm = str(cfg.hydra.runtime.choices.algorithm)
    notes = []
    devices, nodes = cfg.trainer.devices, cfg.trainer.num_nodes
    if isinstance(devices, int) and isinstance(nodes, int) and devices > 0:
        gpus = devices * nodes
    else:
        gpus = 1
        notes.append(f"trainer.devices={devices}: GPU count unknown, 1 assumed")
    if gpus > 1:
        notes.append(f"{gpus} GPUs: throughput per GPU assumed to scale linearly")
    precision = str(cfg.trainer.precision)
    if precision == "auto":
        precision = "bf16-mixed"  # what auto resolves to on a GPU with bf16
    compile_on = bool(cfg.model.get("compile", False))
    protocol = OmegaConf.select(cfg, "protocol.name")
    overridden = {
        str(name)
        for name, value in (
            OmegaConf.to_container(cfg.dataset_overrides) if cfg.get("dataset_overrides") else {}
        ).items()
        if isinstance(value, dict) and ("reader" in value or "reader_options" in value)
    }
    n_tokens = tokens(domain)

    pretrains = requires_pretraining(cfg)
    batch = int(cfg.pretrain.batch_size or domain.batch_size) * (gpus if cfg.batch_scope == "device" else 1)
    steps = int(cfg.pretrain.max_steps) if pretrains else 0
    samples = steps * batch
    pre = bench.pretrain(str(domain.name), algorithm, n_tokens, precision, compile_on, protocol) if pretrains else None
    pretrain_hours = samples / pre.samples_per_s / 3600 if pre else 0.0

    fwd = bench.forward(str(domain.name), n_tokens, precision, compile_on, protocol)
    model = {key: cfg.model.get(key) for key in DABS_ENCODER}
    if model != DABS_ENCODER:
        other = ", ".join(f"{k} {v}" for k, v in model.items() if v != DABS_ENCODER[k])
        for throughput in (pre, fwd):
            if throughput is not None and not throughput.measured:
                throughput.source += f" (timed for the DABS-size encoder; this job's differs: {other})"
    transfers, unknown = [], []
    caches = cache_items(domain, ["train"], domain.name in overridden) if pretrains else []
    for dataset in transfer_sets:
        counts = examples(dataset, dataset.name in overridden)
        tbatch = int(cfg.transfer.batch_size or dataset.batch_size)
        fsamples = _mode_samples(
            counts.train,
            counts.test,
            str(cfg.transfer.mode),
            int(cfg.transfer.epochs),
            tbatch,
            bool(cfg.transfer.drop_last),
        )
        hours = fsamples / fwd.samples_per_s / 3600 if fsamples is not None else None
        if hours is None:
            unknown.append(str(dataset.name))
        source = counts.source + (" (approx.)" if counts.approx else "")
        transfers.append(
            TransferPlan(
                str(dataset.name),
                int(cfg.transfer.epochs),
                str(cfg.transfer.mode),
                counts.train,
                counts.test,
                source,
                fsamples,
                hours,
            )
        )
        caches += cache_items(dataset, ["train", "test"], dataset.name in overridden)
    transfer_hours = sum(t.gpu_hours or 0.0 for t in transfers)
    if cfg.transfer.mode == "cached_features":
        notes.append(
            "transfer.mode=cached_features: one forward pass per example; the probe's epochs on the cached features are not counted"
        )
    compile_hours = 0.0
    if compile_on:
        stages = int(pretrains) + len(transfers)
        compile_hours = stages * COMPILE_ALLOWANCE_S * gpus / 3600
        notes.append(
            f"model.compile on: GPU-h total includes {stages} x {COMPILE_ALLOWANCE_S:g} s of compilation per job "
            f"({ASSUMED}: dabs_rq.plan.COMPILE_ALLOWANCE_S)"
        )
    job = JobPlan(
        overrides=overrides,
        domain=str(domain.name),
        algorithm=algorithm,
        seed=int(cfg.seed),
        gpus=gpus,
        precision=precision,
        pretrain_steps=steps,
        pretrain_batch=batch if pretrains else 0,
        pretrain_samples=samples,
        transfers=transfers,
        pretrain_gpu_hours=pretrain_hours,
        transfer_gpu_hours=transfer_hours,
        transfer_unknown=unknown,
        compile_gpu_hours=compile_hours,
        gpu_hours=pretrain_hours + transfer_hours + compile_hours,
        pretrain_throughput={**asdict(pre), "label": pre.label} if pre else None,
        forward_throughput={**asdict(fwd), "label": fwd.label},
        notes=notes,
    )
    return job, caches


def make_plan(overrides: Sequence[str], bench: Bench) -> dict[str, Any]:
    """The plan of ``dabs-rq -m <overrides>`` as a JSON-ready dict (jobs, totals, caches, sources)."""
    _, composed = compose_sweep(overrides)
    jobs, caches, memo = [], {}, {}
    for job_overrides, cfg in composed:
        try:
            job, items = plan_job(job_overrides, cfg, bench, memo)
        except UserError as err:
            raise UserError(f"job {' '.join(job_overrides)}: {err}" if job_overrides else str(err)) from None
        jobs.append(job)
        for item in items:
            first = caches.setdefault(item.key, item)
            if first is not item and item.dataset != first.dataset and item.dataset not in first.shared_with:
                first.shared_with.append(item.dataset)
    swept = {}
    for job in jobs:
        for item in job.overrides:
            key, _, value = item.partition("=")
            swept.setdefault(key, {})[value] = None
    grid = {k: list(v) for k, v in swept.items() if len(v) > 1}
    items = list(caches.values())
    known = [i for i in items if i.bytes is not None]
    assumed = any(
        not j.forward_throughput["measured"] or (j.pretrain_throughput and not j.pretrain_throughput["measured"])
        for j in jobs
    ) or any(j.compile_gpu_hours for j in jobs)
    return {
        "command": "dabs-rq -m " + " ".join(overrides),
        "overrides": list(overrides),
        "grid": grid,
        "bench": {"card": bench.card, "files": bench.files(), "note": bench.note},
        "jobs": [asdict(j) for j in jobs],
        "totals": {
            "jobs": len(jobs),
            "pretrain_samples": sum(j.pretrain_samples for j in jobs),
            "pretrain_gpu_hours": sum(j.pretrain_gpu_hours for j in jobs),
            "transfer_gpu_hours": sum(j.transfer_gpu_hours for j in jobs),
            "compile_gpu_hours": sum(j.compile_gpu_hours for j in jobs),
            "gpu_hours": sum(j.gpu_hours for j in jobs),
            "gpu_hours_includes_assumptions": assumed,
            "transfer_unknown": sorted({d for j in jobs for d in j.transfer_unknown}),
        },
        "caches": [{k: v for k, v in asdict(i).items() if k != "key"} for i in items],
        "cache_bytes": {
            "known": sum(i.bytes for i in known),
            "stated": sum(i.bytes for i in known if i.status == "stated"),
            "unknown": sorted({f"{i.dataset} ({i.split})" for i in items if i.bytes is None}),
        },
    }
