"""One JSON record per transfer evaluation, written atomically (temp file + rename)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any, Iterator

from dabs_rq.paths import PROJECT_ROOT

RECORD_SCHEMA = 1
_PACKAGES = ("dabs_rq", "torch", "pytorch-lightning", "torchmetrics", "hydra-core", "numpy")


def record_path(results_dir: Path, experiment: str, dataset: str, algorithm: str, seed: int) -> Path:
    return Path(results_dir) / "records" / experiment / dataset / algorithm / f"seed{seed}.json"


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO]:
    """A handle on a temporary file beside ``path`` that replaces ``path`` (after fsync) only if the
    block succeeds: readers see the old file or the complete new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as JSON through :func:`atomic_file`."""
    with atomic_file(path) as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` through :func:`atomic_file`."""
    with atomic_file(path) as handle:
        handle.write(text)


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The project's commit (with ``-dirty`` if the tree has changes), or None outside git."""
    try:
        run = lambda *args: subprocess.run(  # noqa: E731
            ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD")
        return commit + ("-dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None
