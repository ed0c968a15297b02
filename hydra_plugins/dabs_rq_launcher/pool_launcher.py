"""``hydra/launcher=pool`` (conf/hydra/launcher/pool.yaml): a sweep's jobs in a few local worker processes at once (dabs_rq).

Hydra's basic launcher runs a sweep's jobs one after another in one process, each with every core.
A small encoder (the embedded default) cannot use two cores well: its matrices are too small for
intra-op threads to pay. Two jobs at once with one thread each do nearly twice the work on a 2-core
machine (measured: docs/performance.md). This launcher keeps ``workers`` spawned processes, each
running jobs one at a time with ``threads_per_worker`` torch threads, and hands out the jobs in the
sweep's order as workers free up.

* Numbers do not depend on the machine's core count: a job's torch thread count is
  ``threads_per_worker`` whatever the number of workers (floating-point sums depend on the thread
  count, so the same seed with 1 and 2 threads differs in the last digits). Records store it.
* With CUDA, each worker sees one GPU (``CUDA_VISIBLE_DEVICES``, round robin), and ``workers: auto``
  is one worker per GPU; without, ``auto`` is one worker per ``threads_per_worker`` usable cores.
* Every job still runs through Hydra's ``run_job`` (its folder, saved config, logging, callbacks).
  A failed job does not stop the others (as with the basic launcher); the sweep then fails on the
  first failure, and the worker printed its traceback. A job that exits (``dabs-rq: error: ...``,
  status 2) stops the sweep: running jobs finish, queued ones are not started.
* Progress bars of parallel jobs would overwrite each other: with more than one worker each job runs
  with ``trainer.enable_progress_bar=false`` unless the command line sets it, and the launcher logs
  one line per finished job instead.
* DDP inside a job needs one process per device: use ``hydra/launcher=local`` or ``slurm``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import cloudpickle
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from dabs_rq.cores import usable_cores

log = logging.getLogger(__name__)

#: The job override the launcher adds when jobs run side by side (unless the command line sets it).
PROGRESS_BAR_KEY = "trainer.enable_progress_bar"


def visible_gpus() -> list[str]:
    """The GPUs this process may hand out, as ``CUDA_VISIBLE_DEVICES`` entries (empty without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed:
        return [d.strip() for d in listed.split(",") if d.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def resolve_workers(workers: Any, threads_per_worker: int, n_jobs: int, gpus: Sequence[str]) -> int:
    """How many workers to start: ``workers`` if a number, else one per GPU or per ``threads_per_worker``
    cores; never more than there are jobs."""
    if threads_per_worker < 1:
        raise ValueError(f"hydra.launcher.threads_per_worker={threads_per_worker}: must be at least 1")
    if str(workers) == "auto":
        count = len(gpus) if gpus else max(1, usable_cores() // threads_per_worker)
    else:
        try:
            count = int(workers)
        except ValueError:
            raise ValueError(f"hydra.launcher.workers={workers!r}: must be a positive integer or auto") from None
        if count < 1:
            raise ValueError(f"hydra.launcher.workers={workers}: must be a positive integer or auto")
    return max(1, min(count, n_jobs))


def _start_worker(threads: int, slots: Any, gpus: Sequence[str]) -> None:
    """Worker initializer: its thread count and, with GPUs, its one GPU (before CUDA is initialised)."""
    slot = slots.get()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _execute_job(idx: int, overrides: Sequence[str], sweep: bytes) -> bytes:
    """One job in a worker, as Hydra's basic launcher runs it in its own process. ``sweep`` (what every job
    shares: Hydra's context, the sweep config, the task function, Hydra's state, serialized once per sweep)
    and the returned :class:`JobReturn` go through cloudpickle: Hydra's state holds OmegaConf resolvers that
    are local functions, and the job's config holds Hydra's config classes as the worker re-imported them."""
    hydra_context, config, task_function, singleton_state = cloudpickle.loads(sweep)
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = idx
        sweep_config.hydra.job.num = idx
    ret = run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    if ret.status == JobStatus.FAILED:
        error = ret._return_value
        # the traceback does not cross the process boundary: print it here, where it happened
        traceback.print_exception(error)
        try:
            pickle.dumps(error)
        except Exception:  # noqa: BLE001 - an exception that cannot be pickled is sent as its text
            ret.return_value = RuntimeError(f"job #{idx} failed: {error!r}")
    return cloudpickle.dumps(ret)


def job_overrides_for_pool(overrides: Sequence[str], parallel: bool) -> list[str]:
    """``overrides`` plus ``trainer.enable_progress_bar=false`` when jobs run side by side and the
    command line does not set it."""
    overrides = list(overrides)
    if parallel and not any(o.lstrip("+~").startswith(f"{PROGRESS_BAR_KEY}=") for o in overrides):
        overrides.append(f"{PROGRESS_BAR_KEY}=false")
    return overrides


class PoolLauncher(Launcher):
    """Runs a sweep's jobs in ``workers`` spawned processes (see the module docstring)."""

    def __init__(self, workers: Any = "auto", threads_per_worker: int = 1) -> None:
        self.workers = workers
        self.threads_per_worker = int(threads_per_worker)
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        gpus = visible_gpus()
        workers = resolve_workers(self.workers, self.threads_per_worker, len(job_overrides), gpus)
        log.info(
            f"Launching {len(job_overrides)} jobs in {workers} worker process(es), "
            f"{self.threads_per_worker} torch thread(s) each" + (f", GPUs {','.join(gpus)}" if gpus else "")
        )
        jobs = {initial_job_idx + i: job_overrides_for_pool(o, workers > 1) for i, o in enumerate(job_overrides)}
        for idx, overrides in jobs.items():
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        context = multiprocessing.get_context("spawn")  # fork after torch's thread pools start can deadlock
        slots = context.Queue()
        for slot in range(workers):
            slots.put(slot)
        sweep = cloudpickle.dumps((self.hydra_context, self.config, self.task_function, Singleton.get_state()))
        results: dict[int, JobReturn] = {}
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_start_worker, initargs=(self.threads_per_worker, slots, gpus)
        ) as pool:
            started = time.perf_counter()
            queue = iter(jobs.items())
            pending: dict[Future, int] = {}

            def submit_next() -> None:
                # one job per free worker: a queued job is still ours to cancel when the sweep stops
                for idx, overrides in queue:
                    pending[pool.submit(_execute_job, idx, overrides, sweep)] = idx
                    return

            for _ in range(workers):
                submit_next()
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        idx = pending.pop(future)
                        results[idx] = cloudpickle.loads(future.result())  # a job's SystemExit is raised here
                        log.info(
                            f"[{len(results)}/{len(jobs)}] #{idx} {results[idx].status.name.lower()}: "
                            f"{' '.join(filter_overrides(jobs[idx]))} ({time.perf_counter() - started:.0f} s)"
                        )
                        submit_next()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # running jobs finish, queued ones never start
                raise
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [results[idx] for idx in sorted(results)]
