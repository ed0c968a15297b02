"""Ablation summaries: the metric of every dataset against one swept setting.

An ablation experiment (``conf/experiment/ablation_*.yaml``) writes its records under
``<results>/ablations/records/<name>/<setting>=<value>/...``; each record's
``algorithm_settings`` holds the setting's value. :func:`build_ablation` turns them into
``<results>/ablations/<name>.md`` (dataset x value, mean ± std over seeds), ``.csv`` (tidy)
and ``.png`` (metric vs setting, one line per dataset, error bars = std over seeds).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from dabs_rq.results.records import write_text_atomic


def _sort_key(value: object) -> tuple:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def load_ablation(results_dir: Path, name: str, setting: str) -> tuple[pd.DataFrame, list[str]]:
    """One row per record of ablation ``name``: dataset, display name, metric, setting value, seed, value."""
    rows, problems = [], []
    for path in sorted((Path(results_dir) / "records" / name).glob("**/*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            settings = record.get("algorithm_settings") or {}
            if setting not in settings:
                raise ValueError(f"its algorithm_settings have no {setting!r}")
            protocol = record.get("protocol") if isinstance(record.get("protocol"), dict) else {}
            rows.append({"protocol": f"{protocol.get('name', 'unrecorded')} {protocol.get('fingerprint', '')}".strip(),
                         "domain": record["domain"], "dataset": record["dataset"],
                         "display_name": record.get("display_name", record["dataset"]),
                         "metric": record["metric"], "algorithm": record["algorithm"], setting: settings[setting],
                         "seed": record["seed"], "value": float(record["value"])})
        except (OSError, ValueError, KeyError, TypeError) as err:
            problems.append(f"{path}: {err}")
    return pd.DataFrame(rows), problems


def summarize_ablation(records: pd.DataFrame, setting: str) -> pd.DataFrame:
    keys = ["protocol", "domain", "dataset", "display_name", "metric", "algorithm", setting]
    summary = (records.groupby(keys, dropna=False)
               .agg(mean=("value", "mean"), std=("value", "std"), n=("value", "size")).reset_index())
    order = sorted(summary[setting].unique(), key=_sort_key)
    summary["_order"] = summary[setting].map({v: i for i, v in enumerate(order)})
    return (summary.sort_values(["protocol", "domain", "dataset", "_order"]).drop(columns="_order")
            .reset_index(drop=True))


def to_markdown(summary: pd.DataFrame, name: str, setting: str) -> str:
    """One table per protocol (records of different protocols are never averaged), datasets x setting values."""
    values = sorted(summary[setting].unique(), key=_sort_key)
    header = ["Domain", "Dataset", "Metric", *[f"{setting}={v}" for v in values]]
    parts = []
    for protocol, block in summary.groupby("protocol", sort=True):
        label, _, fingerprint = str(protocol).partition(" ")
        lines = [f"Protocol `{label}`" + (f" (fingerprint `{fingerprint}`)" if fingerprint else "") + ":", "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for (domain, _, display, metric), rows in block.groupby(["domain", "dataset", "display_name", "metric"],
                                                               sort=True):
            by_value = {row[setting]: row for _, row in rows.iterrows()}
            cells = []
            for v in values:
                row = by_value.get(v)
                if row is None:
                    cells.append("")
                elif row["n"] > 1 and not pd.isna(row["std"]):
                    cells.append(f"{row['mean']:.2f} ± {row['std']:.2f} ({int(row['n'])})")
                else:
                    cells.append(f"{row['mean']:.2f} ({int(row['n'])})")
            lines.append("| " + " | ".join([str(domain), str(display), str(metric), *cells]) + " |")
        parts.append("\n".join(lines))
    return (f"### {name}: transfer metric vs `{setting}`\n\n" + "\n\n".join(parts)
            + "\n\nCells: mean ± std over seeds (number of seeds); every other setting as in the experiment.\n")


def plot_ablation(summary: pd.DataFrame, name: str, setting: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = sorted(summary[setting].unique(), key=_sort_key)
    xs = {v: i for i, v in enumerate(values)}
    fig, ax = plt.subplots(figsize=(6, 3.6))
    several = summary["protocol"].nunique() > 1
    for (protocol, display, metric), rows in summary.groupby(["protocol", "display_name", "metric"], sort=True):
        ax.errorbar([xs[v] for v in rows[setting]], rows["mean"], yerr=rows["std"].fillna(0), marker="o",
                    capsize=3, label=f"{display} ({metric})" + (f", {protocol}" if several else ""))
    ax.set_xticks(range(len(values)), [str(v) for v in values])
    ax.set_xlabel(setting)
    ax.set_ylabel("transfer metric")
    ax.set_title(name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, metadata={"Software": None})
    plt.close(fig)
    tmp.replace(path)


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
    write_text_atomic(paths["csv"], summary.to_csv(index=False, float_format="%.4f"))
    plot_ablation(summary, name, setting, paths["png"])
    return paths
