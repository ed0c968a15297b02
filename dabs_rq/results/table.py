"""Aggregate result records into the comparison table (Markdown, CSV) and a plot (PNG).

Per dataset and algorithm: mean, std over seeds and the number of seeds; per domain:
the mean over its datasets; for DABS datasets (``paper_name`` in the record) the
paper's None / e-Mix / RQ numbers and our delta to them. Output is a pure function of
the records found, so rebuilding with no new records gives byte-identical files.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from dabs_rq.paths import RESULTS_DIR

PAPER_TABLE = RESULTS_DIR / "reference" / "paper_table1.csv"
PAPER_ALGORITHMS = ("none", "emix", "rq")
KNOWN_ORDER = ("none", "emix", "rq", "shed", "mae", "rq_emix")
RECORD_FIELDS = ("dataset", "display_name", "domain", "algorithm", "seed", "metric", "value")


def resolve_results_dir(results_dir: str | os.PathLike | None) -> Path:
    return Path(results_dir).expanduser() if results_dir else RESULTS_DIR


def load_records(results_dirs: Iterable[Path]) -> tuple[pd.DataFrame, list[str]]:
    """All readable records under ``<dir>/records``; unreadable ones are reported, not fatal."""
    rows, problems = [], []
    for root in results_dirs:
        for path in sorted(Path(root).glob("records/**/*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                missing = [f for f in RECORD_FIELDS if f not in record]
                if missing:
                    raise ValueError(f"missing fields {', '.join(missing)}")
                rows.append({**{f: record[f] for f in RECORD_FIELDS}, "value": float(record["value"]),
                             "paper_name": record.get("paper_name"), "synthetic": bool(record.get("synthetic")),
                             "command": record.get("command")})
            except (OSError, ValueError, TypeError) as err:
                problems.append(f"{path}: {err}")
    columns = [*RECORD_FIELDS, "paper_name", "synthetic", "command"]
    return pd.DataFrame(rows, columns=columns), problems


def algorithm_order(algorithms: Iterable[str]) -> list[str]:
    present = set(algorithms)
    return [a for a in KNOWN_ORDER if a in present] + sorted(present - set(KNOWN_ORDER))


def summarize(records: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Tidy table: one row per (domain, dataset, algorithm) with mean, std, n, paper, delta."""
    keys = ["domain", "dataset", "display_name", "metric", "algorithm"]
    summary = (
        records.groupby(keys, dropna=False)
        .agg(mean=("value", "mean"), std=("value", "std"), n=("value", "size"),
             paper_name=("paper_name", "first"), synthetic=("synthetic", "max"))
        .reset_index()
    )
    summary["n"] = summary["n"].astype(int)
    summary["paper"] = float("nan")
    if paper is not None:
        lookup = {(row["dataset"], algo): float(row[algo]) for _, row in paper.iterrows() for algo in PAPER_ALGORITHMS}
        summary["paper"] = [lookup.get((name, algo), float("nan"))
                            for name, algo in zip(summary["paper_name"], summary["algorithm"])]
    summary["delta"] = summary["mean"] - summary["paper"]
    summary["algorithm"] = pd.Categorical(summary["algorithm"], algorithm_order(summary["algorithm"]))
    return summary.sort_values(["domain", "dataset", "algorithm"]).reset_index(drop=True)


def _cell(mean: float, std: float, n: float) -> str:
    if pd.isna(mean):
        return ""
    n = int(n)
    return f"{mean:.2f} ± {std:.2f} ({n})" if n > 1 and not pd.isna(std) else f"{mean:.2f} ({n})"


def _num(value: float, signed: bool = False) -> str:
    return "" if pd.isna(value) else (f"{value:+.2f}" if signed else f"{value:.2f}")


def to_markdown(summary: pd.DataFrame, commands: Sequence[str] = ()) -> str:
    """Human view: a row per dataset, ours (mean ± std (seeds)) per algorithm, paper and delta."""
    algorithms = list(summary["algorithm"].cat.categories)
    with_paper = [a for a in algorithms if a in PAPER_ALGORITHMS and summary.loc[summary.algorithm == a, "paper"].notna().any()]
    header = ["Domain", "Dataset", "Metric", *algorithms, *[f"paper {a}" for a in with_paper],
              *[f"Δ {a}" for a in with_paper]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for domain, block in summary.groupby("domain", sort=True, observed=True):
        for (dataset, display, metric), rows in block.groupby(["dataset", "display_name", "metric"], sort=True, observed=True):
            by_algo = rows.set_index("algorithm")
            cells = [_cell(*by_algo.loc[a, ["mean", "std", "n"]]) if a in by_algo.index else "" for a in algorithms]
            paper = [_num(by_algo.loc[a, "paper"]) if a in by_algo.index else "" for a in with_paper]
            delta = [_num(by_algo.loc[a, "delta"], signed=True) if a in by_algo.index else "" for a in with_paper]
            name = f"{display}{' (synthetic)' if rows['synthetic'].any() else ''}"
            lines.append("| " + " | ".join([str(domain), name, str(metric), *cells, *paper, *delta]) + " |")
        means = block.groupby("algorithm", observed=True)["mean"].mean()
        paper_means = block.groupby("algorithm", observed=True)["paper"].mean()
        lines.append("| " + " | ".join([
            f"**{domain}**", "**domain mean**", "",
            *[f"**{_num(means.get(a, float('nan')))}**" if a in means.index else "" for a in algorithms],
            *[_num(paper_means.get(a, float("nan"))) for a in with_paper],
            *["" for _ in with_paper],
        ]) + " |")
    legend = ("Cells: mean ± std over seeds (number of seeds). Paper: Wu et al. 2023, supplement Table 1. "
              "Δ = ours − paper. Synthetic = generated data (not real recordings).")
    produced = "".join(f"\n- `{command}`" for command in commands)
    if produced:
        legend += "\n\nProduced by:" + produced
    return "\n".join(lines) + "\n\n" + legend + "\n"


def plot(summary: pd.DataFrame, path: Path) -> None:
    """One panel per domain: bars per dataset and algorithm (std as error bars), paper values as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algorithms = list(summary["algorithm"].cat.categories)
    domains = sorted(summary["domain"].unique())
    colors = {a: plt.get_cmap("tab10")(i % 10) for i, a in enumerate(algorithms)}
    fig, axes = plt.subplots(len(domains), 1, figsize=(10, 2.8 * max(len(domains), 1)), squeeze=False)
    width = 0.8 / max(len(algorithms), 1)
    for ax, domain in zip(axes[:, 0], domains):
        block = summary[summary["domain"] == domain]
        datasets = sorted(block["display_name"].unique())
        for i, algo in enumerate(algorithms):
            rows = block[block["algorithm"] == algo].set_index("display_name").reindex(datasets)
            xs = [d + (i - (len(algorithms) - 1) / 2) * width for d in range(len(datasets))]
            ax.bar(xs, rows["mean"].fillna(0), width, yerr=rows["std"].fillna(0), color=colors[algo], label=algo,
                   capsize=2)
            if rows["paper"].notna().any():
                ax.scatter(xs, rows["paper"], marker="_", s=200, color="black", zorder=3,
                           label="paper" if i == 0 else None)
        ax.set_xticks(range(len(datasets)), datasets, fontsize=8)
        metrics = ", ".join(sorted(block["metric"].unique()))
        ax.set_title(f"{domain}", fontsize=10, loc="left")
        ax.set_ylabel(metrics)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(ncol=len(algorithms) + 1, fontsize=8, loc="lower right", bbox_to_anchor=(1.0, 1.02))
    fig.suptitle("Linear-probe transfer after pretraining (mean ± std over seeds)", fontsize=11, x=0.01,
                 ha="left")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def build_table(results_dirs: Sequence[Path], out_dir: Path | None = None,
                paper_table: Path = PAPER_TABLE) -> dict[str, Path]:
    """Rebuild table.md / table.csv / table.png in ``out_dir`` (default: the first results dir)."""
    out_dir = Path(out_dir or results_dirs[0])
    records, problems = load_records(results_dirs)
    for problem in problems:
        print(f"skipped unreadable record {problem}", file=sys.stderr)
    if records.empty:
        raise FileNotFoundError(
            f"no result records under {', '.join(str(Path(d) / 'records') for d in results_dirs)}: run an experiment first"
        )
    paper = pd.read_csv(paper_table) if Path(paper_table).exists() else None
    summary = summarize(records, paper)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "table.md", "csv": out_dir / "table.csv", "png": out_dir / "table.png"}
    commands = sorted(c for c in records["command"].dropna().unique())
    paths["md"].write_text(to_markdown(summary, commands), encoding="utf-8")
    tidy = summary.drop(columns=["paper_name"]).copy()
    tidy["algorithm"] = tidy["algorithm"].astype(str)
    tidy.to_csv(paths["csv"], index=False, float_format="%.4f")
    plot(summary, paths["png"])
    return paths
