"""Where this process sits in a multi-process job, and the Lightning settings that follow from it.

Launch model (Lightning's standard one): every process of a job runs the whole job function;
Lightning's DDP strategy joins them at ``fit``/``test``. The processes come from one of:

* SLURM (``srun`` tasks, e.g. ``hydra/launcher=submitit_slurm`` with ``tasks_per_node`` =
  GPUs per node): Lightning's ``SLURMEnvironment`` reads the ``SLURM_*`` variables; its own
  requeue handler is switched off because preemption is handled by
  :class:`dabs_rq.checkpointing.ResumableCheckpoint` (and submitit requeues);
* ``hydra/launcher=submitit_local`` with ``tasks_per_node > 1``: :class:`SubmititLocalEnvironment`
  maps submitit's ``SUBMITIT_LOCAL_*`` variables to ranks (Lightning has no plugin for it);
* a single ``dabs-rq`` run with ``trainer.devices > 1``: Lightning re-launches the command once
  per extra device (its subprocess launcher).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import torch
from lightning_fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment

from dabs_rq.errors import UserError

_LOCAL_VARS = ("SUBMITIT_LOCAL_NTASKS", "SUBMITIT_LOCAL_GLOBALID", "SUBMITIT_LOCAL_LOCALID")


class SubmititLocalEnvironment(ClusterEnvironment):
    """Ranks of the tasks that submitit's local executor starts on this machine (one node)."""

    def __init__(self, main_port: int | None = None) -> None:
        super().__init__()
        job_id = int("".join(ch for ch in os.environ.get("SUBMITIT_LOCAL_JOB_ID", "0") if ch.isdigit()) or 0)
        # Every task derives the same port from the job id (the tasks share no other channel).
        self._main_port = main_port or int(os.environ.get("MASTER_PORT", 20000 + job_id % 20000))

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        return self._main_port

    @staticmethod
    def detect() -> bool:
        return all(var in os.environ for var in _LOCAL_VARS) and int(os.environ["SUBMITIT_LOCAL_NTASKS"]) > 1

    def world_size(self) -> int:
        return int(os.environ["SUBMITIT_LOCAL_NTASKS"])

    def set_world_size(self, size: int) -> None:
        if size != self.world_size():
            raise UserError(
                f"trainer.devices x trainer.num_nodes = {size} but submitit started "
                f"{self.world_size()} tasks; set hydra.launcher.tasks_per_node={size}"
            )

    def global_rank(self) -> int:
        return int(os.environ["SUBMITIT_LOCAL_GLOBALID"])

    def set_global_rank(self, rank: int) -> None:
        pass

    def local_rank(self) -> int:
        return int(os.environ["SUBMITIT_LOCAL_LOCALID"])

    def node_rank(self) -> int:
        return 0


def is_launch_rank_zero() -> bool:
    """Whether this process is global rank 0 as its launcher set it (True when run alone), before any
    trainer exists: the process that owns job-level side effects such as rebuilding the table."""
    for var in ("RANK", "SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID"):
        if var in os.environ:
            return int(os.environ[var]) == 0
    # Lightning's re-launched script copies: LOCAL_RANK and NODE_RANK.
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def rank_zero_info(logger: logging.Logger, message: str, *args: Any) -> None:
    """Log a progress line for the user from global rank 0 only (the other ranks of a DDP job stay quiet);
    right before any trainer exists too, whatever launched the processes (see :func:`is_launch_rank_zero`)."""
    if is_launch_rank_zero():
        logger.info(message, *args)


def check_launch(world_size: int) -> None:
    """A multirun with the basic launcher runs its jobs in one process: it cannot start DDP processes."""
    if world_size <= 1 or cluster_plugins() or "LOCAL_RANK" in os.environ:
        return
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        launcher = str(HydraConfig.get().launcher.get("_target_", ""))
        if "submitit" not in launcher:
            raise UserError(
                f"trainer.devices x trainer.num_nodes = {world_size} in a multirun needs one process per "
                "device: add hydra/launcher=local (this machine) or hydra/launcher=slurm (a cluster)"
            )


def cluster_plugins() -> list[Any]:
    """The cluster environment to hand Lightning, if this process runs under a launcher it must know."""
    if SubmititLocalEnvironment.detect():
        return [SubmititLocalEnvironment()]
    if SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=False)]
    return []


def resolve_precision(precision: Any, accelerator: str) -> Any:
    """``auto``: bf16 mixed precision on a GPU that supports it, else full float32."""
    if str(precision) != "auto":
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if on_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


def free_port() -> int:
    """A TCP port nobody listens on now (for tests and local multi-process jobs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
