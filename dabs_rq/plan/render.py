"""A plan as text: the job grid, per-job steps/samples/GPU-hours, throughputs, transfers, totals, cache disk."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from dabs_rq.plan.throughput import ASSUMED


def table(rows: list[tuple[str, ...]], right: Sequence[int] | None = None) -> list[str]:
    """Rows (the first the header) as aligned text columns: the first left-aligned, the others right-aligned
    unless ``right`` names the right-aligned ones (pandas' plain-text table; cells are taken as text)."""
    frame = pd.DataFrame(rows[1:], columns=list(rows[0]))
    align = ["right" if (i in right if right is not None else i > 0) else "left" for i in range(frame.shape[1])]
    text = frame.to_markdown(index=False, tablefmt="plain", colalign=align, disable_numparse=True)
    return [line.rstrip() for line in text.splitlines()]


def size_text(n: int | None) -> str:
    """Bytes as text (GB with one decimal, MB, ``<1 MB``; ``unknown`` for None)."""
    if n is None:
        return "unknown"
    if n >= 1e9:
        return f"{n / 1e9:,.1f} GB"
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 or n == 0 else "<1 MB"


def _num(n: int | None) -> str:
    return "unknown" if n is None else f"{n:,}"


def render(plan: dict[str, Any]) -> str:
    """The plan as text: the job grid, per-job steps/samples/GPU-hours, throughputs, transfers, totals, cache disk."""
    jobs, totals = plan["jobs"], plan["totals"]
    lines = [f"Plan of: {plan['command']}  (nothing launched)"]
    grid = " x ".join(f"{k} ({len(v)})" for k, v in plan["grid"].items())
    count = f"{totals['jobs']} job{'s' if totals['jobs'] != 1 else ''}"
    lines.append(count + (f": {grid}" if grid else ""))
    bench = plan["bench"]
    if bench["files"]:
        lines.append(f"Benchmarks used: {', '.join(bench['files'])} (card: {bench['card']})")
    else:
        lines.append(f"Benchmarks used: none ({bench['note']}); every throughput below is {ASSUMED}")
    lines.append("")

    def mark(throughput: dict | None) -> str:
        return "" if throughput is None or throughput["measured"] else "*"

    header = ("job", "GPUs", "pretrain steps", "batch", "samples", "transfers", "GPU-h pretrain", "GPU-h transfer")
    rows = [(*header, "GPU-h total")]
    for job in jobs:
        pre = job["pretrain_throughput"]
        unknown = bool(job["transfer_unknown"])
        rows.append(
            (
                f"{job['domain']}/{job['algorithm']}/seed{job['seed']}",
                str(job["gpus"]),
                _num(job["pretrain_steps"]) if pre else "none",
                str(job["pretrain_batch"]) if pre else "-",
                _num(job["pretrain_samples"]) if pre else "-",
                str(len(job["transfers"])),
                f"{job['pretrain_gpu_hours']:.2f}{mark(pre)}" if pre else "0",
                f"{'>= ' if unknown else ''}{job['transfer_gpu_hours']:.2f}{mark(job['forward_throughput'])}",
                f"{'>= ' if unknown else ''}{job['gpu_hours']:.2f}",
            )
        )
    lines += table(rows)
    lines.append(f"* from a throughput {ASSUMED} (below); >= : a transfer set of unknown size is not counted")
    lines += [f"note: {n}" for n in sorted({n for j in jobs for n in j["notes"]})]

    lines += ["", "Throughput per GPU (samples/s):"]
    rows, seen = [("domain", "stage", "samples/s", "status", "source")], set()
    for job in jobs:
        for stage, t in (
            (f"pretrain {job['algorithm']}", job["pretrain_throughput"]),
            ("transfer forward", job["forward_throughput"]),
        ):
            if t is not None and (job["domain"], stage) not in seen:
                seen.add((job["domain"], stage))
                rows.append((job["domain"], stage, f"{t['samples_per_s']:,.0f}", t["label"], t["source"]))
    lines += ["  " + line for line in table(rows, right=(2,))]

    lines += ["", "Transfer datasets (linear probe on the frozen encoder; forward samples = encoder passes it costs):"]
    groups: dict[str, list[dict]] = {}
    for job in jobs:
        groups.setdefault(json.dumps([job["domain"], job["transfers"]], sort_keys=True, default=str), []).append(job)
    for same in groups.values():
        lines.append(f"  {same[0]['domain']} ({len(same)} job{'s' if len(same) != 1 else ''}):")
        for t in same[0]["transfers"]:
            lines.append(
                f"    {t['dataset']:<24} {t['mode']}, {t['epochs']} epochs; train {_num(t['train_examples'])} / "
                f"test {_num(t['test_examples'])} examples ({t['examples_source']}); "
                f"forward samples {_num(t['forward_samples'])}"
            )

    lines += ["", "Data caches (cache_dir; built once per dataset split, shared by every job):"]
    rows = [("dataset", "split", "size", "status", "how")]
    for i in plan["caches"]:
        shared = f"; the same cache as {', '.join(i['shared_with'])}" if i["shared_with"] else ""
        rows.append((i["dataset"], i["split"], size_text(i["bytes"]), i["status"], i["how"] + shared))
    lines += ["  " + line for line in table(rows, right=(2,))]
    cache = plan["cache_bytes"]
    stated = f", of which {size_text(cache['stated'])} as stated in the YAMLs, not computed" if cache["stated"] else ""
    unknown = f"; unknown: {', '.join(cache['unknown'])}" if cache["unknown"] else ""
    lines.append(f"  total {size_text(cache['known'])}{stated}{unknown}")

    lines += ["", f"Total: {count}, {_num(totals['pretrain_samples'])} pretraining samples"]
    total = (
        f"  {totals['gpu_hours']:.1f} GPU-hours = pretrain {totals['pretrain_gpu_hours']:.1f} + transfer "
        f"{totals['transfer_gpu_hours']:.1f} + compile {totals['compile_gpu_hours']:.1f}"
    )
    if totals["transfer_unknown"]:
        total += f", plus the transfers of unknown size ({', '.join(totals['transfer_unknown'])})"
    lines.append(total)
    if totals["gpu_hours_includes_assumptions"]:
        lines.append(f"  (rests on throughputs {ASSUMED}: see Throughput per GPU)")
    elif jobs:
        lines.append("  (every throughput used was measured)")
    return "\n".join(lines) + "\n"
