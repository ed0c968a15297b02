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
