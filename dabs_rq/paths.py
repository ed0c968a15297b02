"""Where the project's own folders (conf/, domains/, results/) and the data cache live."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = PROJECT_ROOT / "conf"
DOMAINS_DIR = PROJECT_ROOT / "domains"
#: Committed results: reference numbers and the published embedded-default records, tables and plots.
RESULTS_DIR = PROJECT_ROOT / "results"
#: Where a user's runs write when neither ``results_dir`` nor ``$DABS_RQ_RESULTS`` is set: an untracked
#: (gitignored) folder, so that running the project never rewrites a committed file.
LOCAL_RESULTS_DIR = RESULTS_DIR / "local"
RESULTS_ENV = "DABS_RQ_RESULTS"


def cache_dir() -> Path:
    """Cache for generated/preprocessed data: ``$DABS_RQ_CACHE`` or ``~/.cache/dabs_rq``."""
    return Path(os.environ.get("DABS_RQ_CACHE", Path.home() / ".cache" / "dabs_rq")).expanduser()


def default_results_dir() -> Path:
    """The results folder of a run that names none: ``$DABS_RQ_RESULTS``, else ``results/local/`` (gitignored)."""
    return Path(os.environ.get(RESULTS_ENV) or LOCAL_RESULTS_DIR).expanduser()


def resolve_results_dir(results_dir: str | os.PathLike | None) -> Path:
    """``results_dir`` (``~`` expanded), or :func:`default_results_dir` when it is not given."""
    return Path(results_dir).expanduser() if results_dir else default_results_dir()


def results_subdir(sub: str = "") -> str:
    """``<results>/<sub>`` of :func:`default_results_dir`.

    Registered as the config resolver ``${dabs_rq_results:<sub>}`` (ablations keep their records
    apart from the main table's).
    """
    root = default_results_dir()
    return str(root / sub) if sub else str(root)


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("dabs_rq_results"):
        OmegaConf.register_new_resolver("dabs_rq_results", results_subdir)


_register_resolvers()
