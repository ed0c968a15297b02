"""Atomic file writes: the one way this project stores a file.

Every file (records, tables, plots, checkpoints, caches, run state) is written to a temporary
name beside its destination, flushed to disk and renamed over it only when complete, so a
reader, or a job killed at any instant (SIGKILL included), sees the old file or the new one,
never a torn one. A temporary name is ``.<name>.<pid>.<random><suffix>``: writers of the same
file (concurrent jobs, DDP ranks) never share one, and a leftover one is plainly a leftover.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


def _create_temporary(path: Path, suffix: str) -> Path:
    """A new empty file beside ``path``, created with the permissions the umask gives any new file
    (``tempfile.mkstemp`` would make it owner-only, and the rename would keep that)."""
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_path(path: Path | str, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that wants a file name (``np.save``, a memmap,
    ``savefig``); it replaces ``path`` (after fsync) only if the block succeeds, and is removed if
    it fails. ``suffix`` is the temporary name's ending, for writers that pick a format by
    extension (``.npy``, ``.png``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path, suffix)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_file(path: Path | str, mode: str = "w") -> Iterator[IO]:
    """An open handle (``mode`` ``"w"``: UTF-8 text with ``\\n`` line ends, ``"wb"``: bytes) on a temporary
    file that replaces ``path`` only if the block succeeds (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": "\n"})) as handle:
            yield handle


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) through :func:`atomic_file`."""
    with atomic_file(path) as handle:
        handle.write(text)


def write_json_atomic(path: Path | str, payload: Any, indent: int | None = 2) -> None:
    """Write ``payload`` as JSON (sorted keys; non-JSON values as ``str``) through :func:`atomic_file`."""
    with atomic_file(path) as handle:
        json.dump(payload, handle, indent=indent, sort_keys=True, default=str)
        handle.write("\n")


def write_array_atomic(path: Path | str, array: np.ndarray) -> None:
    """Write ``array`` as a ``.npy`` file (no pickled objects) through :func:`atomic_file`."""
    import numpy as np

    with atomic_file(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
