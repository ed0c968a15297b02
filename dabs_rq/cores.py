"""The CPU cores this process may use: its affinity mask where the OS has one (cgroup-limited jobs and
``taskset`` narrow it), else the machine's count. One helper for every worker-count default."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
