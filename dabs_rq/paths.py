"""Where the project's own folders (conf/, domains/, results/) and the data cache live."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = PROJECT_ROOT / "conf"
DOMAINS_DIR = PROJECT_ROOT / "domains"
RESULTS_DIR = PROJECT_ROOT / "results"


def cache_dir() -> Path:
    """Cache for generated/preprocessed data: ``$DABS_RQ_CACHE`` or ``~/.cache/dabs_rq``."""
    return Path(os.environ.get("DABS_RQ_CACHE", Path.home() / ".cache" / "dabs_rq")).expanduser()


def results_subdir(sub: str = "") -> str:
    """``<results>/<sub>``: the results folder is ``$DABS_RQ_RESULTS`` or the project's ``results/``.

    Registered as the config resolver ``${dabs_rq_results:<sub>}`` (ablations keep their records
    apart from the main table's).
    """
    root = Path(os.environ.get("DABS_RQ_RESULTS") or RESULTS_DIR).expanduser()
    return str(root / sub) if sub else str(root)


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("dabs_rq_results"):
        OmegaConf.register_new_resolver("dabs_rq_results", results_subdir)


_register_resolvers()
