"""A sweep checks every job before it starts the first one.

Without this, ``dabs-rq -m domain=good,broken`` would run the first job to the end (hours at full
scale) before the second failed on a typo. :class:`ValidateJobs` (a Hydra callback) enumerates the
sweep's jobs as Hydra's basic sweeper does, composes each job's config and runs
:func:`dabs_rq.checks.validate_job` on it: settings, dataset YAMLs and reader schemas, encoder,
algorithm, tasks, and that the data is on disk. Any user mistake stops the sweep with one line per
bad job (exit status 2) before anything is launched or submitted.
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from dabs_rq.distributed import is_launch_rank_zero


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """Each job's overrides, in launch order: the sweeper's ``params`` then the command line's, as
    Hydra's basic sweeper combines them (the Cartesian product of every swept key)."""
    # hydra 1.3 has no public home for the basic sweeper (hydra-core is pinned in pyproject.toml)
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    params = config.hydra.sweeper.get("params")  # None when no experiment sets any
    params = OmegaConf.to_container(params, resolve=False) if params else {}
    arguments = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(arguments)
    (batch,) = BasicSweeper.split_arguments(overrides, None)
    return batch


class ValidateJobs(Callback):
    """Before a multirun launches anything: every job's config and data definitions are checked."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from dabs_rq.checks import validate_job
        from dabs_rq.cli import _user_error

        if not is_launch_rank_zero():
            return
        loader = GlobalHydra.instance().config_loader()
        jobs = sweep_jobs(config)
        problems = []
        for overrides in jobs:
            job_config = loader.load_sweep_config(config, list(overrides))
            with open_dict(job_config):
                job_config.output_dir = "."  # the job folder is not needed to check the job
            try:
                validate_job(job_config)
            except Exception as err:  # noqa: BLE001 - a user's mistake is collected, a bug re-raised
                user_error = _user_error(err)
                if user_error is None:
                    raise
                problems.append(f"dabs-rq: error: job {' '.join(overrides)}: {user_error}")
        if problems:
            print("\n".join(problems), file=sys.stderr)
            print(
                f"dabs-rq: {len(problems)} of {len(jobs)} jobs of this sweep are invalid; none was started",
                file=sys.stderr,
            )
            sys.exit(2)
