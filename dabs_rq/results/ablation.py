"""Ablation summaries: the metric of every dataset against one swept setting.

An ablation experiment (``conf/experiment/ablation_*.yaml``) writes its records under
``<results>/ablations/records/<name>/<setting>=<value>/...``; each record's
``algorithm_settings`` holds the setting's value. :func:`build_ablation` turns them into
``<results>/ablations/<name>.md`` (dataset x value, mean ± std [95 % t-interval] over seeds, one table per
protocol), ``.csv`` (tidy, with the interval's bounds) and ``.png`` (metric vs setting, one line per dataset,
error bars = the 95 % t-interval of the mean over seeds, none for one seed).
Records are read, reduced and drawn by the helpers the results table uses (:mod:`dabs_rq.results.frame`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from dabs_rq.io import write_text_atomic
from dabs_rq.results.frame import CELL_LEGEND, aggregate, cell, figure, load_records, markdown_table


def _sort_key(value: object) -> tuple:
    """Numbers in numeric order, then everything else by name."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def load_ablation(results_dir: Path, name: str, setting: str) -> tuple[pd.DataFrame, list[str]]:
    """The records of ablation ``name`` (:func:`~dabs_rq.results.frame.load_records`' columns) with the swept
    ``setting``'s value as a column of its own and ``protocol`` as ``"<name> <fingerprint>"``; records
    whose algorithm settings lack ``setting`` are reported with the unreadable ones."""
    records, problems = load_records([results_dir], under=name)
    settings = [json.loads(s) for s in records["algorithm_settings"]]
    has = [setting in s for s in settings]
    problems += [
        f"{path}: its algorithm_settings have no {setting!r}" for path, ok in zip(records["path"], has) if not ok
    ]
    kept = records.loc[has].reset_index(drop=True)
    return kept.assign(
        protocol=kept["protocol"] + " " + kept["protocol_fingerprint"],
        **{setting: [s[setting] for s in settings if setting in s]},
    ), problems


def summarize_ablation(records: pd.DataFrame, setting: str) -> pd.DataFrame:
    """Mean, std, seeds and the 95 % t-interval per (protocol, dataset, metric, algorithm, setting value),
    values in sweep order."""
    summary = aggregate(records, ["protocol", "domain", "dataset", "display_name", "metric", "algorithm", setting])
    order = {v: i for i, v in enumerate(sorted(summary[setting].unique(), key=_sort_key))}
    return (
        summary.assign(_order=summary[setting].map(order))
        .sort_values(["protocol", "domain", "dataset", "_order"])
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def to_markdown(summary: pd.DataFrame, name: str, setting: str) -> str:
    """One table per protocol (records of different protocols are never averaged), datasets x setting values."""
    values = sorted(summary[setting].unique(), key=_sort_key)
    header = ["Domain", "Dataset", "Metric", *[f"{setting}={v}" for v in values]]
    parts = []
    for protocol, block in summary.groupby("protocol", sort=True):
        label, _, fingerprint = str(protocol).partition(" ")
        rows = []
        for (domain, _, display, metric), group in block.groupby(
            ["domain", "dataset", "display_name", "metric"], sort=True
        ):
            by_value = {row[setting]: row for _, row in group.iterrows()}
            rows.append(
                [
                    str(domain),
                    str(display),
                    str(metric),
                    *[
                        cell(by_value[v]["mean"], by_value[v]["std"], by_value[v]["n"]) if v in by_value else ""
                        for v in values
                    ],
                ]
            )
        parts.append(
            f"Protocol `{label}`"
            + (f" (fingerprint `{fingerprint}`)" if fingerprint else "")
            + ":\n\n"
            + markdown_table(header, rows)
        )
    return (
        f"### {name}: transfer metric vs `{setting}`\n\n"
        + "\n\n".join(parts)
        + f"\n\nCells: {CELL_LEGEND}; every other setting as in the experiment.\n"
    )


def plot_ablation(summary: pd.DataFrame, name: str, setting: str, path: Path) -> None:
    """Metric vs setting value, one line per (dataset, metric) and protocol, error bars = the 95 % t-interval of
    the mean over seeds (none for one seed)."""
    values = sorted(summary[setting].unique(), key=_sort_key)
    xs = {v: i for i, v in enumerate(values)}
    several = summary["protocol"].nunique() > 1
    with figure(path, 1, figsize=(6, 3.6), dpi=120) as (_, (ax,)):
        for (protocol, display, metric), rows in summary.groupby(["protocol", "display_name", "metric"], sort=True):
            ax.errorbar(
                [xs[v] for v in rows[setting]],
                rows["mean"],
                yerr=rows["ci_high"] - rows["mean"],
                marker="o",
                capsize=3,
                label=f"{display} ({metric})" + (f", {protocol}" if several else ""),
            )
        ax.set_xticks(range(len(values)), [str(v) for v in values])
        ax.set_xlabel(setting)
        ax.set_ylabel("transfer metric")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)


def build_ablation(results_dir: Path, name: str, setting: str) -> dict[str, Path]:
    """Write ``<results_dir>/<name>.{md,csv,png}`` from the ablation's records; returns their paths."""
    records, problems = load_ablation(results_dir, name, setting)
    for problem in problems:
        print(f"dabs-rq ablation: skipped {problem}")
    if records.empty:
        raise FileNotFoundError(f"no records of ablation {name!r} under {Path(results_dir) / 'records' / name}")
    summary = summarize_ablation(records, setting)
    paths = {kind: Path(results_dir) / f"{name}.{kind}" for kind in ("md", "csv", "png")}
    write_text_atomic(paths["md"], to_markdown(summary, name, setting))
    write_text_atomic(paths["csv"], summary.to_csv(index=False, float_format="%.4f", lineterminator="\n"))
    plot_ablation(summary, name, setting, paths["png"])
    return paths
