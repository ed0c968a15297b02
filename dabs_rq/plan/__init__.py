"""``dabs-rq plan [-m] <overrides>``: what a sweep would cost, computed without launching anything.

The jobs are the sweep's own: the config is composed by Hydra exactly as ``dabs-rq -m <overrides>``
composes it, and :func:`dabs_rq.sweep_check.sweep_jobs` enumerates its jobs in launch order (``-m``
is optional: a plan is always of what the multirun would launch). Per job the plan gives the
pretraining steps and samples (``max_steps`` x effective batch; ``none`` does not pretrain), the
transfer datasets with their probe epochs and example counts, and an estimate of GPU-hours; for
the sweep, the total and the disk its data caches need. Nothing is read from the data folders.

Every number says where it comes from, and an assumption is never shown as a measurement:

* Example counts: the dataset YAML's ``examples`` key (its own figures or the DABS dataset
  inventory's, with their source), the reader's settings where they fix the count (PAMAP2 windows),
  otherwise ``unknown``.
* Throughput (samples/s per GPU), from the benchmark JSONs in ``results/bench`` (``--bench-dir``)
  for one card (``--card``, default: the card of the newest GPU benchmark), or from one file
  (``--bench``): *measured* where a ``pretrain_step`` benchmark has a row of the job's domain and
  algorithm (``samples_per_s``, or ``batch`` and ``step_ms``; its ``none`` row, a frozen forward
  pass, times the transfer's feature extraction; where eager and compiled rows exist (``compiled``),
  the one run as the job's ``model.compile`` is used); otherwise *assumed, not measured*: an
  ``encoder`` benchmark's encoder-only training step at the domain's token count divided by the
  algorithm's encoder passes per step (:data:`ENCODER_PASSES`), and forward-only = that step x
  :data:`FORWARD_SPEEDUP`; with no benchmark at all, :data:`DEFAULT_ENCODER_SAMPLES_PER_S`.
* GPU-hours = samples / per-GPU samples/s (linear scaling over a job's GPUs assumed), plus, with
  ``model.compile`` on, :data:`COMPILE_ALLOWANCE_S` per compiled stage (assumed).
* Cache disk: examples x the cache's row shape and dtype where the reader's cache format is known
  (images uint8 ``[3, H, W]``, X-rays uint8 ``[1, H, W]``, speech float16 ``[1, mels, frames]``,
  text int32 ``[max_length]`` + an 8-byte label), else the figure stated in the YAML's
  ``data.size`` (``+ N GB preprocessed cache``), else ``unknown``. Caches two datasets share
  (the three Fluent Speech tasks, CheXpert pretraining and transfer, MNLI's train split) count once.

One module per job: :mod:`.datasets` (example counts, tokens), :mod:`.caches` (cache disk),
:mod:`.throughput` (benchmark JSONs), :mod:`.estimate` (the jobs and their GPU-hours), :mod:`.render`
(the text); this module is the command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dabs_rq.errors import UserError
from dabs_rq.plan.caches import CacheItem, cache_items
from dabs_rq.plan.datasets import Examples, examples, tokens
from dabs_rq.plan.estimate import COMPILE_ALLOWANCE_S, DABS_ENCODER, JobPlan, TransferPlan, make_plan, plan_job
from dabs_rq.plan.render import render
from dabs_rq.plan.throughput import (
    ASSUMED,
    BENCH_DIR,
    DEFAULT_ENCODER_SAMPLES_PER_S,
    DEFAULT_PASSES,
    ENCODER_PASSES,
    FORWARD_SPEEDUP,
    Bench,
    Throughput,
)

__all__ = [
    "ASSUMED",
    "BENCH_DIR",
    "COMPILE_ALLOWANCE_S",
    "DABS_ENCODER",
    "DEFAULT_ENCODER_SAMPLES_PER_S",
    "DEFAULT_PASSES",
    "ENCODER_PASSES",
    "FORWARD_SPEEDUP",
    "Bench",
    "CacheItem",
    "Examples",
    "JobPlan",
    "Throughput",
    "TransferPlan",
    "cache_items",
    "examples",
    "main",
    "make_plan",
    "plan_job",
    "render",
    "tokens",
]


def main(argv: list[str]) -> int:
    """``dabs-rq plan``: print the plan of a sweep (and write it as JSON with ``--json``); exit 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="dabs-rq plan",
        description="What a sweep would run and cost (jobs, steps, samples, GPU-hours, cache disk); launches nothing.",
    )
    parser.add_argument("overrides", nargs="*", help="the sweep's Hydra overrides, e.g. experiment=paper protocol=dabs")
    parser.add_argument(
        "-m",
        "--multirun",
        action="store_true",
        help="accepted for symmetry with dabs-rq -m (a plan is always of the multirun)",
    )
    parser.add_argument("--card", default=None, help="GPU whose benchmarks to use (a part of its name, e.g. H100)")
    parser.add_argument("--bench", type=Path, default=None, help="use this benchmark JSON only")
    parser.add_argument(
        "--bench-dir", type=Path, default=BENCH_DIR, help=f"where benchmark JSONs are (default: {BENCH_DIR})"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the plan as JSON to this file")
    args = parser.parse_intermixed_args(argv)  # options may come between the overrides
    try:
        bench = Bench.find(args.bench_dir, args.card, args.bench)
        plan = make_plan(args.overrides, bench)
    except UserError as err:
        print(f"dabs-rq plan: error: {err}", file=sys.stderr)
        return 2
    print(render(plan), end="")
    if args.json is not None:
        from dabs_rq.io import write_json_atomic

        write_json_atomic(args.json, plan)
        print(f"Plan written to {args.json}")
    return 0
