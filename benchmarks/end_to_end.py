"""Wall time of the README's embedded-default command, split by stage (install excluded).

Runs ``dabs-rq -m experiment=embedded`` in a subprocess into a temporary results folder and
splits the wall time with the records' own timings: pretraining, transfer (feature
extraction + linear probe) and everything else (start-up, data generation/caching,
Hydra, table). Target: at most 10 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
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


def run(device: str = "cpu", quick: bool = False) -> list[dict]:
    extra = ["pretrain.max_steps=20", "transfer.epochs=5"] if quick else []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DABS_RQ_RESULTS": str(Path(tmp) / "results")}
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
    split = stage_split(records)
    rows = [
        {"stage": stage, "seconds": round(seconds, 1), "share %": round(100 * seconds / wall, 1)}
        for stage, seconds in sorted(split.items())
    ]
    other = wall - sum(split.values())
    rows.append(
        {
            "stage": "other (start-up, data caching, Hydra, table)",
            "seconds": round(other, 1),
            "share %": round(100 * other / wall, 1),
        }
    )
    rows.append(
        {
            "stage": f"total wall ({len(records)} records{', quick settings' if quick else ''})",
            "seconds": round(wall, 1),
            "share %": 100.0,
            "target": f"<= {TARGET_S:.0f} s",
            "met": wall <= TARGET_S,
        }
    )
    return rows
