"""Locate a data file inside an installed package without importing the package."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_file(package: str, relative: str) -> Path:
    """Path of ``relative`` inside installed ``package``; a clear error if it is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package '{package}' is not installed; install it with: pip install {package}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise FileNotFoundError(f"'{relative}' not found in package '{package}' at {path}")
    return path
