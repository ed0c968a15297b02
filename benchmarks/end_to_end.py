"""Wall time of the README's embedded-default command, split by stage (install excluded).

Runs ``dabs-rq -m experiment=embedded`` in a subprocess, from an empty data cache, into a
temporary results folder, and splits the time with the records' own timings: pretraining,
transfer (feature extraction + linear probe) and everything else (start-up, data
generation/caching, Hydra, table, a worker waiting for the last job). The embedded default runs
its jobs in parallel workers (``hydra/launcher=pool``), so the stages are worker-seconds: their
shares are of wall time x workers. Target: at most 10 minutes of wall time on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

TITLE = "End to end: embedded default (dabs-rq -m experiment=embedded)"
TARGET_S = 600.0


def stage_split(records: list[dict]) -> dict[str, float]:
    """Seconds of pretraining (once per job) and of transfer (per record), per domain."""
    pretrain: dict[tuple, float] = {}
    split: dict[str, float] = defaultdict(float)
    for r in records:
        pretrain[(r["pretrain_dataset"], r["algorithm"], r["seed"])] = r["timings"]["pretrain_s"]
        split[f"transfer {r['domain']}"] += r["timings"]["transfer_s"]
    for (domain, _algorithm, _seed), seconds in pretrain.items():
        split[f"pretrain {domain}"] += seconds
    return dict(split)


def launched_workers(output: str) -> int:
    """The worker count the pool launcher announced (1 for a launcher that runs jobs one by one)."""
    found = re.search(r"Launching \d+ jobs in (\d+) worker process", output)
    return int(found.group(1)) if found else 1


def run(device: str = "cpu", quick: bool = False) -> list[dict]:
    extra = ["pretrain.max_steps=20", "transfer.epochs=5"] if quick else []
    with tempfile.TemporaryDirectory() as tmp:
        # an empty cache: the embedded data is generated and cached inside the measured time, as on a fresh machine
        env = {**os.environ, "DABS_RQ_RESULTS": str(Path(tmp) / "results"), "DABS_RQ_CACHE": str(Path(tmp) / "cache")}
        cmd = [
            sys.executable,
            "-m",
            "dabs_rq.cli",
            "-m",
            "experiment=embedded",
            f"hydra.sweep.dir={tmp}/multirun",
            "trainer.enable_progress_bar=false",
            *extra,
        ]
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"embedded run failed: {done.stderr[-2000:]}")
        records = [json.loads(p.read_text()) for p in Path(tmp, "results", "records").glob("**/*.json")]
    workers = launched_workers(done.stdout + done.stderr)
    threads = sorted({r.get("compute", {}).get("torch_threads") for r in records} - {None})
    split = stage_split(records)
    capacity = wall * workers  # worker-seconds available
    rows = [
        {"stage": stage, "seconds": round(seconds, 1), "share %": round(100 * seconds / capacity, 1)}
        for stage, seconds in sorted(split.items())
    ]
    other = capacity - sum(split.values())
    rows.append(
        {
            "stage": "other (start-up, data caching, Hydra, table, idle workers)",
            "seconds": round(other, 1),
            "share %": round(100 * other / capacity, 1),
        }
    )
    rows.append(
        {
            "stage": f"total wall ({len(records)} records, {workers} worker(s) x {'/'.join(map(str, threads))} "
            f"thread(s){', quick settings' if quick else ''})",
            "seconds": round(wall, 1),
            "share %": 100.0,
            "target": f"<= {TARGET_S:.0f} s",
            "met": wall <= TARGET_S,
        }
    )
    return rows
