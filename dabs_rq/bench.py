"""``dabs-rq bench``: run the speed benchmarks under ``benchmarks/`` and write their results.

Each benchmark module exposes ``TITLE`` and ``run(device, quick) -> list[dict]``: one flat
row per measured case (a baseline and our implementation run side by side in the same
process, so the ratios are meaningful), with optional ``target`` (what is asked) and ``met``
(whether it is). A module whose ``run`` also takes ``protocol`` (``pretrain_step``: ``dabs`` or
``smoke``) gets ``--protocol``; one run at a protocol other than the module's default for the
device (``default_protocol(device)``) is written as ``<name>-<protocol>-<device>.json``. Results
go to ``results/bench/<name>-<device>.json`` with the machine they ran on (on CUDA also ``card``,
the GPU's name, at the top level) and every JSON found is summarised in ``results/bench/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import json
import os
import platform
import sys
from pathlib import Path

import pandas as pd

from dabs_rq.io import write_json_atomic, write_text_atomic
from dabs_rq.paths import PROJECT_ROOT, RESULTS_DIR

BENCHMARKS = ("rq", "encoder", "pretrain_step", "end_to_end", "data_pipeline")
BENCH_DIR = RESULTS_DIR / "bench"


def machine(device: str) -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": device,
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
        info["compute_capability"] = f"{props.major}.{props.minor}"
        info["cuda"] = torch.version.cuda
    else:
        info["cpu_model"] = (
            next(
                (
                    line.split(":", 1)[1].strip()
                    for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")
                ),
                platform.processor(),
            )
            if Path("/proc/cpuinfo").exists()
            else platform.processor()
        )
    return info


def run_benchmark(
    name: str, device: str, quick: bool, out_dir: Path, protocol: str | None = None, budget_s: float | None = None
) -> Path:
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))  # benchmarks/ lives beside the package
    module = importlib.import_module(f"benchmarks.{name}")
    kwargs, tag = {}, ""
    if "protocol" in inspect.signature(module.run).parameters:
        protocol = protocol or module.default_protocol(device)
        kwargs["protocol"] = protocol
        tag = "" if protocol == module.default_protocol(device) else f"{protocol}-"
    elif protocol is not None:
        print(f"[bench] {name} has no protocols; --protocol {protocol} does not apply to it", flush=True)
    if budget_s is not None and "budget_s" in inspect.signature(module.run).parameters:
        kwargs["budget_s"] = budget_s
    title = module.TITLE + (f" (protocol {kwargs['protocol']})" if "protocol" in kwargs else "")
    print(f"[bench] {title} on {device}{' (quick)' if quick else ''} ...", flush=True)
    rows = module.run(device=device, quick=quick, **kwargs)
    info = machine(device)
    payload = {
        "benchmark": name,
        "title": title,
        "quick": quick,
        **({"protocol": kwargs["protocol"]} if "protocol" in kwargs else {}),
        **({"card": info["gpu"]} if info.get("gpu") else {}),
        "machine": info,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "rows": rows,
        "columns": list(
            dict.fromkeys(key for row in rows for key in row)
        ),  # the summary's order (JSON keys are sorted)
    }
    path = out_dir / f"{name}-{tag}{device.replace(':', '')}{'-quick' if quick else ''}.json"
    write_json_atomic(path, payload)
    print(pd.DataFrame(rows).to_string(index=False))
    return path


def _float_formats(table: pd.DataFrame) -> list[str]:
    """``.3g`` per column, but whole numbers for a float column that holds only whole numbers (an integer
    column with gaps, which pandas stores as floats): 1914, not 1.91e+03."""
    formats = []
    for _, column in table.items():
        values = column.dropna()
        whole = pd.api.types.is_float_dtype(column) and len(values) and bool((values % 1 == 0).all())
        formats.append(".0f" if whole else ".3g")
    return formats


def summary_markdown(out_dir: Path) -> str:
    """All benchmark JSONs of ``out_dir`` as Markdown tables, with the machine each ran on."""
    parts = [
        "# Benchmarks\n",
        "Regenerate with `dabs-rq bench` (all) or `dabs-rq bench --only rq encoder`; "
        "`--device cuda` on a GPU. Each table's variants are measured side by side in one process "
        "(ratios against a baseline or reference where the table has one).\n",
    ]
    for path in sorted(out_dir.glob("*.json")):
        data = json.loads(path.read_text())
        m = data["machine"]
        where = (
            m.get("gpu") or f"{m.get('cpu_model', '?')}, {m.get('cpus')} CPUs, {m.get('torch_threads')} torch threads"
        )
        parts.append(f"## {data['title']} — {data['machine']['device']}{' (quick)' if data.get('quick') else ''}\n")
        parts.append(f"Machine: {where}; torch {m['torch']}; {data['created']}\n")
        table = pd.DataFrame(data["rows"])
        if data.get("columns"):  # the benchmark's own column order (older results: the JSON's sorted keys)
            table = table[[c for c in data["columns"] if c in table] + [c for c in table if c not in data["columns"]]]
        parts.append(table.to_markdown(index=False, floatfmt=_float_formats(table)) + "\n")
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dabs-rq bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=None, help="run only these benchmarks")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test of the benchmarks)")
    parser.add_argument(
        "--protocol",
        choices=("dabs", "smoke"),
        default=None,
        help="pretrain_step: the paper's protocol on real-format data (default on CUDA) or the embedded "
        "default (default on a CPU)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="pretrain_step: about how many seconds it may take; rows it leaves no time for are marked skipped",
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR, help="folder for the JSON results and README.md")
    parser.add_argument("--summary-only", action="store_true", help="only rebuild README.md from the JSON results")
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="also put the summary between the BENCH START/END markers of this file "
        "(the project's: docs/performance.md)",
    )
    args = parser.parse_args(argv)
    if not args.summary_only:
        for name in args.only or list(BENCHMARKS):
            run_benchmark(name, args.device, args.quick, args.out, args.protocol, args.budget_s)
    summary = summary_markdown(args.out)
    write_text_atomic(args.out / "README.md", summary)
    if args.readme:
        from dabs_rq.readme import inject_block

        body = summary.split("\n", 1)[1].replace("\n## ", "\n### ")  # below the README's own heading
        inject_block(args.readme, "BENCH", body)
    print(f"\nBenchmark summary: {args.out / 'README.md'}")
    return 0
