"""Aggregate result records into the comparison table (Markdown, CSV) and a plot (PNG).

The table never mixes protocols. Records are grouped into one *section* per (experiment,
protocol name, protocol fingerprint); the fingerprint is a hash of the number-affecting settings
(model, pretraining steps and batch, transfer mode and epochs, ...) that the runner stores in
``record["protocol"]``. Inside a section, records of one algorithm with different
``algorithm_fingerprint`` are separate columns (``rq``, ``rq [3f2a]``) and records of one dataset
with different ``dataset_fingerprint`` are separate rows (``CoLA``, ``CoLA [ds 91c0]``), with
footnotes that say which settings differ. Records written before protocols were recorded (schema 1)
form protocol ``unrecorded`` with a fingerprint derived from their stored ``config`` (``legacy``
when they have none).

Per cell: mean, std over seeds, the 95 % t-interval of the mean and the number of seeds, and marks
where the cell is significantly better or worse than ``none`` / ``emix`` on the same dataset
(Welch's t-test over seeds, Holm-adjusted over every test of the section; see
:mod:`dabs_rq.results.statistics`); per domain: the mean over its datasets and each column's mean
rank (and the mean rank over all the section's datasets); for DABS datasets (``paper_name`` in the
record) the paper's None / e-Mix / RQ numbers and our delta to them, and the DABS 2.0 README
numbers where they are known. ``--reference`` adds ``table_reference.md``: the paper's whole Table 1
with our cells of the paper protocol (``dabs``).

Output is a pure function of the records found, so rebuilding with no new records gives
byte-identical files.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dabs_rq.io import write_text_atomic
from dabs_rq.paths import RESULTS_DIR, default_results_dir
from dabs_rq.results.frame import (
    CELL_LEGEND,
    SECTION_KEYS,
    aggregate,
    canonical,
    cell,
    figure,
    load_records,
    markdown_table,
)
from dabs_rq.results.statistics import ALPHA, TEST_NAME, descending_ranks, direction, holm, welch

#: The paper's Table 1 (Wu et al. 2023, supplement; DABS 1.0 code): dataset,domain,metric,none,emix,rq.
PAPER_TABLE = RESULTS_DIR / "reference" / "paper_table1.csv"
#: Reference numbers from the DABS README (v2.0, post-fix captioned-images pipeline), cited separately
#: from the paper. To add a number: append a row ``dataset,domain,metric,none,emix,shed,source`` where
#: ``dataset`` is the dataset's name in paper_table1.csv (= the records' ``paper_name``), unknown numbers
#: are left blank and ``source`` says where the numbers were read.
DABS2_README_TABLE = RESULTS_DIR / "reference" / "dabs2_readme.csv"
PAPER_ALGORITHMS = ("none", "emix", "rq")
DABS2_ALGORITHMS = ("none", "emix", "shed")
KNOWN_ORDER = ("none", "emix", "rq", "shed", "mae", "rq_emix")
#: The protocol whose records fill ``table_reference.md`` (the paper's DABS protocol).
REFERENCE_PROTOCOL = "dabs"
#: Paper rows whose numbers are not comparable with ours (shown, but no delta), and why.
NOT_COMPARABLE = {"VQA": "paper used the pre-fix DABS captioned-images code"}
#: The columns every other column of a row is tested against (the primary column of each, not its variants).
BASELINES = ("none", "emix")
#: Marks of a significant difference against each baseline: (better, worse).
MARKS = {"none": ("▲n", "▼n"), "emix": ("▲e", "▼e")}
#: The keys of one table row (a dataset variant) within a section.
ROW_KEYS = ["domain", "dataset", "metric", "dataset_fingerprint"]
#: Settings named in a section's one-line summary, when the protocol has them.
MAIN_SETTINGS = (
    "model.dim",
    "model.depth",
    "pretrain.max_steps",
    "pretrain.batch_size",
    "pretrain.effective_batch_size",
    "transfer.mode",
    "transfer.epochs",
    "transfer.drop_last",
    "trainer.precision",
)
MAX_LISTED_SETTINGS = 20
LEGEND = (
    "How to read: one section per (experiment, protocol fingerprint): its heading names the experiment, the "
    "protocol and its fingerprint (a hash of the number-affecting settings: model, pretraining steps and batch, "
    "transfer mode and epochs, ...), the line under it the main settings. Records of different sections are never "
    "averaged together. Records from before protocols were recorded form protocol `unrecorded` (fingerprint from "
    "their stored config, `legacy` when they have none). In a section, a column `algorithm [xxxx]` holds records "
    "of that algorithm with other algorithm settings and a row `Dataset [ds xxxx]` records of that dataset with "
    "other dataset settings (the notes say what differs); domain means and mean ranks are over the unmarked rows. "
    f"Cells: {CELL_LEGEND}; ▲n / ▼n: significantly better / worse than `none` on that row, ▲e / ▼e: than `emix` "
    f"(Welch's t-test over seeds, Holm-adjusted over the section's tests, α = {ALPHA}; each section's notes say "
    "how many tests). Mean rank: 1 = the best mean of the row (every metric is higher-is-better). "
    "Paper: Wu et al. 2023, supplement Table 1 (DABS 1.0 code). Δ = ours − paper. DABS 2.0 README: numbers from "
    "the DABS README (v2.0, after the captioned-images fix of 2023-01-02; results/reference/dabs2_readme.csv), "
    'shown only where known. A row marked "not comparable" '
    "shows the paper's numbers but no Δ. Synthetic = generated data (not real recordings)."
)


def resolve_results_dir(results_dir: str | os.PathLike | None) -> Path:
    """``results_dir`` (``~`` expanded), or the default results folder when it is not given."""
    return Path(results_dir).expanduser() if results_dir else default_results_dir()


# --------------------------------------------------------------------------------------------- references


def algorithm_order(algorithms: Iterable[str]) -> list[str]:
    """The algorithms present, in the table's column order: the known ones first (KNOWN_ORDER), then by name."""
    present = set(algorithms)
    return [a for a in KNOWN_ORDER if a in present] + sorted(present - set(KNOWN_ORDER))


def read_reference(path: Path | None, algorithms: Sequence[str]) -> pd.DataFrame | None:
    """A reference table (paper / DABS README) indexed by dataset, or None when the file is absent."""
    if path is None or not Path(path).exists():
        return None
    table = pd.read_csv(path, dtype={"dataset": str})
    for algorithm in algorithms:
        table[algorithm] = pd.to_numeric(table[algorithm], errors="coerce") if algorithm in table else float("nan")
    return table


def _lookup(table: pd.DataFrame | None, algorithms: Sequence[str]) -> dict[tuple[str, str], float]:
    """``(dataset, algorithm) -> number`` of a reference table, without its blank cells."""
    if table is None:
        return {}
    return {
        (str(row["dataset"]), a): float(row[a])
        for _, row in table.iterrows()
        for a in algorithms
        if not pd.isna(row[a])
    }


# --------------------------------------------------------------------------------------------- summary


def _short_names(fingerprints: Iterable[str]) -> dict[str, str]:
    """Shortest prefixes (at least 4 characters) that tell the fingerprints apart."""
    fingerprints = sorted(set(fingerprints))
    for length in range(4, max((len(f) for f in fingerprints), default=4) + 1):
        if len({f[:length] for f in fingerprints}) == len(fingerprints):
            return {f: f[:length] for f in fingerprints}
    return {f: f for f in fingerprints}


def _ranks(records: pd.DataFrame, group: list[str], variant: str) -> dict[tuple, tuple[int, str]]:
    """Per group, its variants ranked by number of records (most first, then by name): key -> (rank, short)."""
    out = {}
    counts = records.groupby([*group, variant], dropna=False).size()
    by_group: dict[tuple, list[tuple[int, str]]] = {}
    for key, count in counts.items():
        by_group.setdefault(tuple(key[:-1]), []).append((-int(count), str(key[-1])))
    for key, variants in by_group.items():
        short = _short_names(v for _, v in variants)
        for rank, (_, name) in enumerate(sorted(variants)):
            out[(*key, name)] = (rank, short[name])
    return out


def summarize(
    records: pd.DataFrame, paper: pd.DataFrame | None = None, dabs2: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Tidy table: one row per (section, domain, dataset variant, metric, algorithm variant) with mean, std,
    n, the 95 % t-interval, the paper's number and our delta to it, the DABS 2.0 README number, the row / column
    labels, and the cell's rank and tests against the baselines (:func:`add_statistics`)."""
    keys = [*SECTION_KEYS, "domain", "dataset", "dataset_fingerprint", "metric", "algorithm", "algorithm_fingerprint"]
    summary = aggregate(
        records,
        keys,
        display_name=("display_name", "first"),
        paper_name=("paper_name", "first"),
        synthetic=("synthetic", "max"),
        seed_values=("value", list),
    )
    columns = _ranks(records, [*SECTION_KEYS, "algorithm"], "algorithm_fingerprint")
    rows = _ranks(records, [*SECTION_KEYS, "domain", "dataset", "metric"], "dataset_fingerprint")
    col_keys = [
        tuple(r) for r in summary[[*SECTION_KEYS, "algorithm", "algorithm_fingerprint"]].itertuples(index=False)
    ]
    row_keys = [
        tuple(r)
        for r in summary[[*SECTION_KEYS, "domain", "dataset", "metric", "dataset_fingerprint"]].itertuples(index=False)
    ]
    summary["column_rank"] = [columns[k][0] for k in col_keys]
    summary["column"] = [k[-2] if columns[k][0] == 0 else f"{k[-2]} [{columns[k][1]}]" for k in col_keys]
    summary["row_rank"] = [rows[k][0] for k in row_keys]
    display = summary.groupby([*SECTION_KEYS, "domain", "dataset", "metric"])["display_name"].transform("first")
    summary["row"] = [d if rows[k][0] == 0 else f"{d} [ds {rows[k][1]}]" for d, k in zip(display, row_keys)]
    paper_numbers, dabs2_numbers = _lookup(paper, PAPER_ALGORITHMS), _lookup(dabs2, DABS2_ALGORITHMS)
    names = [str(p) if isinstance(p, str) else None for p in summary["paper_name"]]
    summary["paper"] = [paper_numbers.get((p, a), float("nan")) for p, a in zip(names, summary["algorithm"])]
    summary["paper_note"] = [f"not comparable: {NOT_COMPARABLE[p]}" if p in NOT_COMPARABLE else "" for p in names]
    summary["delta"] = [
        float("nan") if note else m - p for m, p, note in zip(summary["mean"], summary["paper"], summary["paper_note"])
    ]
    summary["dabs2_readme"] = [dabs2_numbers.get((p, a), float("nan")) for p, a in zip(names, summary["algorithm"])]
    order = {a: i for i, a in enumerate(algorithm_order(summary["algorithm"]))}
    summary["_algo"] = summary["algorithm"].map(order)
    summary = summary.sort_values([*SECTION_KEYS, "domain", "dataset", "metric", "row_rank", "_algo", "column_rank"])
    return add_statistics(summary.drop(columns="_algo").reset_index(drop=True))


def add_statistics(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` (with each cell's ``seed_values``) plus, per cell: ``rank`` among the columns of its row
    (1 = best mean, ties averaged), and for each baseline ``b`` of :data:`BASELINES` present in the row (its
    primary column): ``p_vs_b`` (Welch's t-test of the cell's seeds against the baseline's), ``p_vs_b_holm``
    (Holm-adjusted over every distinct test of the section) and ``sig_vs_b`` (better / worse / n.s.; empty when
    not tested), and ``test`` (the test's name where one was run). ``none`` against ``emix`` is one test, shown
    on both cells (mirrored), so the family counts it once."""
    out = summary.copy()
    out["rank"] = float("nan")
    out["test"] = ""
    for baseline in BASELINES:
        out[f"p_vs_{baseline}"] = float("nan")
        out[f"p_vs_{baseline}_holm"] = float("nan")
        out[f"sig_vs_{baseline}"] = ""
    for _, part in out.groupby(SECTION_KEYS, dropna=False, sort=True):
        pairs: dict[tuple[int, int], float] = {}  # (cell, cell) index pair, smaller first -> raw p
        for _, row in part.groupby(ROW_KEYS, dropna=False, sort=True):
            out.loc[row.index, "rank"] = descending_ranks(list(row["mean"]))
            by_column = dict(zip(row["column"], row.index))
            for baseline in BASELINES:
                if baseline in by_column:
                    b = by_column[baseline]
                    for i in row.index:
                        if i != b and (min(i, b), max(i, b)) not in pairs:
                            pairs[(min(i, b), max(i, b))] = welch(out.at[i, "seed_values"], out.at[b, "seed_values"]).p
        adjusted = holm(list(pairs.values()))
        for (i, j), p, q in zip(pairs, pairs.values(), adjusted):
            for me, other in ((i, j), (j, i)):
                baseline = out.at[other, "column"]
                if baseline in BASELINES and not pd.isna(p):
                    out.at[me, f"p_vs_{baseline}"], out.at[me, f"p_vs_{baseline}_holm"] = p, q
                    out.at[me, f"sig_vs_{baseline}"] = direction(out.at[me, "mean"] - out.at[other, "mean"], q)
                    out.at[me, "test"] = TEST_NAME
    return out


def marks(row: Any) -> str:
    """The significance marks of a summary row (``▲n▼e`` ...; empty when it differs from no baseline)."""
    return "".join(
        MARKS[b][0]
        if getattr(row, f"sig_vs_{b}") == "better"
        else MARKS[b][1]
        if getattr(row, f"sig_vs_{b}") == "worse"
        else ""
        for b in BASELINES
    )


def marked_cell(row: Any) -> str:
    """A summary row's :func:`~dabs_rq.results.frame.cell`, followed by its significance marks."""
    text = cell(row.mean, row.std, row.n)
    found = marks(row)
    return f"{text} {found}" if found else text


# --------------------------------------------------------------------------------------------- Markdown


def _num(value: float, signed: bool = False) -> str:
    """A number with two decimals (``+`` sign with ``signed``), empty for NaN."""
    return "" if pd.isna(value) else (f"{value:+.2f}" if signed else f"{value:.2f}")


def _value(value: Any) -> str:
    """A setting's value as shown in the notes (strings as they are, the rest as JSON)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _mean(values: Iterable[float]) -> float:
    """The mean of the values that are not NaN (NaN when none is)."""
    values = [v for v in values if not pd.isna(v)]
    return sum(values) / len(values) if values else float("nan")


def _sections(summary: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The (experiment, protocol, fingerprint) sections of a summary, sorted."""
    return sorted({tuple(k) for k in summary[SECTION_KEYS].itertuples(index=False)})


def _part(frame: pd.DataFrame, section: tuple[str, str, str]) -> pd.DataFrame:
    """The rows of ``frame`` (records or summary) that belong to ``section``."""
    mask = (
        (frame["experiment"] == section[0])
        & (frame["protocol"] == section[1])
        & (frame["protocol_fingerprint"] == section[2])
    )
    return frame[mask]


def _section_columns(part: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(label, algorithm, algorithm_fingerprint) of a section's columns, in display order."""
    order = {a: i for i, a in enumerate(algorithm_order(part["algorithm"]))}
    cols = {
        (order[r.algorithm], r.column_rank, r.column, r.algorithm, r.algorithm_fingerprint)
        for r in part.itertuples(index=False)
    }
    return [c[2:] for c in sorted(cols)]


def _section_rows(part: pd.DataFrame) -> list[tuple]:
    """(domain, dataset, metric, row_rank, dataset_fingerprint, label) of a section's rows, in display order."""
    rows = {
        (r.domain, r.dataset, r.metric, r.row_rank, r.dataset_fingerprint, r.row) for r in part.itertuples(index=False)
    }
    return sorted(rows)


def _settings_line(settings: dict) -> str:
    """The line under a section's heading: its main protocol settings."""
    if not settings:
        return "Settings: none recorded (legacy records without a config)."
    main = [k for k in MAIN_SETTINGS if k in settings] or sorted(settings)[:6]
    rest = len(settings) - len(main)
    return (
        "Settings: "
        + ", ".join(f"{k}={_value(settings[k])}" for k in main)
        + (f" (+{rest} more)" if rest else "")
        + "."
    )


def _differing(mine: dict, others: Sequence[dict]) -> list[str]:
    """``key=value`` (this section's value) for every key whose value is not the same in all given dicts."""
    out = []
    for key in sorted(set(mine).union(*others)):
        values = {canonical(d[key]) if key in d else "<unset>" for d in (mine, *others)}
        if len(values) > 1:
            out.append(f"{key}={_value(mine[key]) if key in mine else '(unset)'}")
    return out


def _listed(items: list[str]) -> str:
    """``items`` joined, cut at MAX_LISTED_SETTINGS with a count of the rest."""
    shown = items[:MAX_LISTED_SETTINGS]
    more = len(items) - len(shown)
    return ", ".join(shown) + (f" (+{more} more)" if more else "")


def _pair_diff(variant: dict, primary: dict, primary_label: str) -> str:
    """What a variant's settings change against the primary's: ``key=value (primary: value)``."""
    missing = "(unset)"
    keys = sorted(set(variant) | set(primary))
    diffs = [
        f"{k}={_value(variant[k]) if k in variant else missing} ({primary_label}: "
        f"{_value(primary[k]) if k in primary else missing})"
        for k in keys
        if canonical(variant.get(k)) != canonical(primary.get(k)) or (k in variant) != (k in primary)
    ]
    return _listed(diffs) if diffs else "no difference in the stored settings"


def _protocol_settings(records: pd.DataFrame) -> dict[tuple[str, str, str], dict]:
    """Settings of each section (the first record's; all records of a section share its fingerprint)."""
    first = records.drop_duplicates(SECTION_KEYS)
    return {tuple(r[:3]): json.loads(r[3]) for r in first[[*SECTION_KEYS, "protocol_settings"]].itertuples(index=False)}


def _heading(section: tuple[str, str, str], settings: dict[tuple, dict], level: str) -> list[str]:
    """A section's heading, its settings line and how it differs from the other fingerprints of its protocol."""
    experiment, name, fingerprint = section
    lines = [
        f"{level} Experiment `{experiment}` · protocol `{name}` · fingerprint `{fingerprint}`",
        "",
        _settings_line(settings[section]),
    ]
    siblings = sorted(
        {
            s[2]: settings[s]
            for s in settings  # sections without recorded settings: nothing to compare
            if s[1] == name and s[2] != fingerprint and settings[s]
        }.items()
    )
    if siblings and settings[section]:
        others = ", ".join(f"`{fp}`" for fp, _ in siblings)
        diffs = _differing(settings[section], [s for _, s in siblings])
        lines.append(
            f"Differs from the other `{name}` protocol fingerprint(s) ({others}) in: "
            f"{_listed(diffs) if diffs else 'no recorded setting'}."
        )
    return lines


def _notes(part: pd.DataFrame, recs: pd.DataFrame) -> list[str]:
    """Footnotes of a section: algorithm and dataset variants, the commits, the commands."""
    notes = []
    columns = _section_columns(part)
    algo_settings = {
        (r.algorithm, r.algorithm_fingerprint): json.loads(r.algorithm_settings)
        for r in recs.drop_duplicates(["algorithm", "algorithm_fingerprint"]).itertuples(index=False)
    }
    for label, algorithm, fingerprint in columns:
        if label != algorithm:
            primary = next(fp for lbl, a, fp in columns if a == algorithm and lbl == algorithm)
            notes.append(
                f"`{label}`: algorithm fingerprint `{fingerprint}` (`{algorithm}`: `{primary}`); differs in "
                + _pair_diff(algo_settings[(algorithm, fingerprint)], algo_settings[(algorithm, primary)], algorithm)
                + "."
            )
    rows = _section_rows(part)
    ds_settings = {
        (r.domain, r.dataset, r.metric, r.dataset_fingerprint): json.loads(r.dataset_settings)
        for r in recs.drop_duplicates(["domain", "dataset", "metric", "dataset_fingerprint"]).itertuples(index=False)
    }
    for domain, dataset, metric, rank, fingerprint, label in rows:
        if rank:
            primary_fp, primary_label = next(
                (fp, lbl) for d, ds, m, rk, fp, lbl in rows if (d, ds, m, rk) == (domain, dataset, metric, 0)
            )
            notes.append(
                f"`{label}`: dataset fingerprint `{fingerprint}` (`{primary_label}`: `{primary_fp}`); "
                "differs in "
                + _pair_diff(
                    ds_settings[(domain, dataset, metric, fingerprint)],
                    ds_settings[(domain, dataset, metric, primary_fp)],
                    primary_label,
                )
                + "."
            )
    commits = recs["git_commit"].map(lambda c: str(c) if isinstance(c, str) and c else "").value_counts()
    listed = []
    for commit in sorted(commits.index):
        count = int(commits[commit])
        plural = "record" if count == 1 else "records"
        if not commit:
            listed.append(f"unknown commit ({count} {plural})")
        elif commit.endswith("-dirty"):
            listed.append(f"`{commit[:12]}-dirty` ({count} {plural}, uncommitted changes)")
        else:
            listed.append(f"`{commit[:12]}` ({count} {plural})")
    notes.append("Commits behind these numbers: " + "; ".join(listed) + ".")
    return notes


def _commands(recs: pd.DataFrame) -> list[str]:
    """The "Produced by:" list of the commands behind a section's records (nothing when none is recorded)."""
    commands = sorted(c for c in recs["command"].dropna().unique())
    return ["", "Produced by:", *[f"- `{c}`" for c in commands]] if commands else []


def _section_markdown(
    section: tuple[str, str, str],
    summary: pd.DataFrame,
    records: pd.DataFrame,
    settings: dict[tuple, dict],
    paper: dict,
    dabs2: dict,
) -> list[str]:
    """A section of table.md: heading, table (ours, paper, Δ, DABS 2.0 README; domain means), notes, commands."""
    part, recs = _part(summary, section), _part(records, section)
    columns = _section_columns(part)
    rows = _section_rows(part)
    row_paper = {
        (d, ds, m): part[(part.domain == d) & (part.dataset == ds) & (part.metric == m)]["paper_name"].iloc[0]
        for d, ds, m, *_ in rows
    }
    names = {k: (v if isinstance(v, str) else None) for k, v in row_paper.items()}
    with_paper = any((n, a) in paper for n in names.values() for a in PAPER_ALGORITHMS)
    paper_cols = list(PAPER_ALGORITHMS) if with_paper else []
    delta_cols = [a for a in paper_cols if any(label == a for label, _, _ in columns)]
    dabs2_cols = (
        list(DABS2_ALGORITHMS) if any((n, a) in dabs2 for n in names.values() for a in DABS2_ALGORITHMS) else []
    )
    header = [
        "Domain",
        "Dataset",
        "Metric",
        *[c[0] for c in columns],
        *[f"paper {a}" for a in paper_cols],
        *[f"Δ {a}" for a in delta_cols],
        *[f"DABS 2.0 README {a}" for a in dabs2_cols],
    ]
    table: list[list[str]] = []
    cells = {(r.domain, r.dataset, r.metric, r.dataset_fingerprint, r.column): r for r in part.itertuples(index=False)}
    all_ranks: dict[str, list[float]] = {c[0]: [] for c in columns}
    for domain in sorted({r[0] for r in rows}):
        primary_means: dict[str, list[float]] = {c[0]: [] for c in columns}
        primary_ranks: dict[str, list[float]] = {c[0]: [] for c in columns}
        paper_means: dict[str, list[float]] = {a: [] for a in paper_cols}
        for d, dataset, metric, rank, fingerprint, label in rows:
            if d != domain:
                continue
            found = {c[0]: cells.get((d, dataset, metric, fingerprint, c[0])) for c in columns}
            name = names[(d, dataset, metric)]
            note = NOT_COMPARABLE.get(name) if name else None
            synthetic = any(r.synthetic for r in found.values() if r is not None)
            shown = f"{label}{' (synthetic)' if synthetic else ''}{f' (not comparable: {note})' if note else ''}"
            ours = [marked_cell(r) if r is not None else "" for r in found.values()]
            papers = [_num(paper.get((name, a), float("nan"))) for a in paper_cols]
            deltas = [
                ""
                if note or found.get(a) is None
                else _num(found[a].mean - paper.get((name, a), float("nan")), signed=True)
                for a in delta_cols
            ]
            refs = [_num(dabs2.get((name, a), float("nan"))) for a in dabs2_cols]
            table.append([domain, shown, metric, *ours, *papers, *deltas, *refs])
            if rank == 0:
                for label_, r in found.items():
                    if r is not None:
                        primary_means[label_].append(r.mean)
                        primary_ranks[label_].append(r.rank)
                        all_ranks[label_].append(r.rank)
                for a in paper_cols:
                    if found.get(a) is not None and not note:
                        paper_means[a].append(paper.get((name, a), float("nan")))
        table.append(
            [
                f"**{domain}**",
                "**domain mean**",
                "",
                *[f"**{_num(_mean(v))}**" if v else "" for v in primary_means.values()],
                *[_num(_mean(paper_means[a])) for a in paper_cols],
                *["" for _ in delta_cols],
                *["" for _ in dabs2_cols],
            ]
        )
        table.append(_rank_row(f"**{domain}**", primary_ranks, len(header)))
    table.append(_rank_row("**all domains**", all_ranks, len(header)))
    return [
        *_heading(section, settings, "###"),
        "",
        markdown_table(header, table),
        "",
        "Notes:",
        *[f"- {n}" for n in [*_statistics_notes(part), *_notes(part, recs)]],
        *_commands(recs),
    ]


def _rank_row(label: str, ranks: dict[str, list[float]], width: int) -> list[str]:
    """A ``mean rank`` row: each column's mean rank over the rows it was run on, blank for the other columns."""
    row = [label, "**mean rank**", "", *[_num(_mean(v)) if v else "" for v in ranks.values()]]
    return row + [""] * (width - len(row))


def _statistics_notes(part: pd.DataFrame) -> list[str]:
    """The notes that say how a section's marks and mean ranks were computed, and how many tests were significant."""
    tests: dict[frozenset, bool] = {}  # one per unordered pair of cells (none vs emix is shown on both) -> significant
    for r in part.itertuples(index=False):
        for baseline in BASELINES:
            if getattr(r, f"sig_vs_{baseline}"):
                row = (r.dataset, r.dataset_fingerprint, r.metric)
                tests[frozenset({(*row, r.column), (*row, baseline)})] = getattr(r, f"sig_vs_{baseline}") != "n.s."
    significant = sum(tests.values())
    present = [b for b in BASELINES if b in set(part["column"])]
    if not present:
        tested = "no `none` or `emix` column in this section, so nothing was tested."
    elif not tests:
        tested = "no test could be run (a test needs at least 2 seeds on both sides and some spread on one)."
    else:
        tested = (
            f"{significant} of the {len(tests)} tests of this section "
            f"{'is' if significant == 1 else 'are'} significant after Holm's adjustment."
        )
    return [
        "Marks: ▲n / ▼n = significantly better / worse than `none` on that row, ▲e / ▼e = than `emix`. Test: "
        f"Welch's t-test (`{TEST_NAME}`, two-sided, unequal variances) of each column's seeds against the "
        "baseline's on the same row; the p-values of every test of this section are adjusted together with "
        f"Holm's method and a mark needs an adjusted p < {ALPHA}. No mark: not significant, or not tested (fewer "
        "than 2 seeds on a side, or no spread on either). " + tested,
        "Mean rank: on each row the columns run are ranked by mean (1 = best; every metric is higher-is-better; "
        "ties share the average rank); a domain's mean rank is over its unmarked rows, `all domains` over every "
        "unmarked row of the section.",
    ]


def to_markdown(
    summary: pd.DataFrame, records: pd.DataFrame, paper: pd.DataFrame | None = None, dabs2: pd.DataFrame | None = None
) -> str:
    """Human view: a section per (experiment, protocol fingerprint); in each a row per dataset (variant), ours
    (mean ± std (seeds)) per algorithm (variant), the paper's numbers and delta, the DABS 2.0 README numbers."""
    settings = _protocol_settings(records)
    paper_numbers, dabs2_numbers = _lookup(paper, PAPER_ALGORITHMS), _lookup(dabs2, DABS2_ALGORITHMS)
    lines: list[str] = []
    for section in _sections(summary):
        lines += _section_markdown(section, summary, records, settings, paper_numbers, dabs2_numbers) + [""]
    return "\n".join(lines) + "\n" + LEGEND + "\n"


def to_reference_markdown(
    summary: pd.DataFrame, records: pd.DataFrame, paper: pd.DataFrame, dabs2: pd.DataFrame | None = None
) -> str:
    """The paper's whole Table 1 (by domain, with its domain means) beside our cells of the paper protocol:
    one section per (experiment, fingerprint) of protocol ``dabs``; empty cells were not run."""
    settings = _protocol_settings(records)
    dabs2_numbers = _lookup(dabs2, DABS2_ALGORITHMS)
    sections = [s for s in _sections(summary) if s[1] == REFERENCE_PROTOCOL]
    lines = [
        "# The paper's Table 1 beside our runs of its protocol",
        "",
        f"Which records fill it: those whose protocol name is `{REFERENCE_PROTOCOL}` (the paper's DABS protocol), "
        "one section per (experiment, protocol fingerprint); records of other protocols are only in table.md. "
        "All 34 rows of the paper's Table 1 (Wu et al. 2023, supplement; DABS 1.0 code) are listed by domain; "
        f"empty cells of ours were not run. Ours: {CELL_LEGEND}; significance marks (▲n / ▼n against `none`, "
        "▲e / ▼e against `emix`) as in table.md (Welch's t-test over seeds, Holm-adjusted over the section). "
        "Paper domain mean: the "
        "mean of the rows above (results/reference/paper_table1.csv; the published DABS means differ in places); "
        "ours: the mean when every row of the domain was run, else how many were. DABS 2.0 README: post-fix "
        "numbers from the DABS README (v2.0; results/reference/dabs2_readme.csv), where known. "
        'A row marked "not comparable" has paper numbers from a pipeline that differs from ours.',
        "",
    ]
    if not sections:
        lines += [f"## No records of protocol `{REFERENCE_PROTOCOL}` yet", ""]
        lines.append(
            _reference_table(
                paper, pd.DataFrame(columns=summary.columns), [(a, a, "") for a in PAPER_ALGORITHMS], dabs2_numbers
            )
        )
        return "\n".join(lines) + "\n"
    for section in sections:
        part, recs = _part(summary, section), _part(records, section)
        present = _section_columns(part)
        labels = {c[0] for c in present}
        columns = sorted(
            [*present, *[(a, a, "") for a in PAPER_ALGORITHMS if a not in labels]],
            key=lambda c: (algorithm_order([*part["algorithm"], *PAPER_ALGORITHMS]).index(c[1]), c[0] != c[1], c[0]),
        )
        lines += [*_heading(section, settings, "##"), ""]
        lines.append(_reference_table(paper, part, columns, dabs2_numbers))
        others = sorted(
            {
                r.row
                for r in part.itertuples(index=False)
                if not (isinstance(r.paper_name, str) and r.paper_name in set(paper["dataset"]))
            }
        )
        notes = _notes(part, recs)
        if others:
            notes.append("Also in these records, not in the paper's Table 1 (see table.md): " + ", ".join(others) + ".")
        lines += ["", "Notes:", *[f"- {n}" for n in notes], *_commands(recs), ""]
    return "\n".join(lines)


def _reference_table(paper: pd.DataFrame, part: pd.DataFrame, columns: list[tuple[str, str, str]], dabs2: dict) -> str:
    """The paper's Table 1 rows by domain (with its domain means) beside ``part``'s cells in ``columns``."""
    dabs2_cols = list(DABS2_ALGORITHMS) if dabs2 else []
    header = [
        "Domain",
        "Dataset",
        "Metric",
        *[f"paper {a}" for a in PAPER_ALGORITHMS],
        *[f"ours {c[0]}" for c in columns],
        *[f"DABS 2.0 README {a}" for a in dabs2_cols],
    ]
    table: list[list[str]] = []
    by_row: dict[str, dict[tuple[int, str], dict[str, Any]]] = {}
    for r in part.itertuples(index=False):
        if isinstance(r.paper_name, str):
            by_row.setdefault(r.paper_name, {}).setdefault((r.row_rank, r.row), {})[r.column] = r
    domains = list(dict.fromkeys(paper["domain"]))
    for domain in domains:
        block = paper[paper["domain"] == domain]
        ours_means: dict[str, list[float]] = {c[0]: [] for c in columns}
        for _, prow in block.iterrows():
            name = str(prow["dataset"])
            note = NOT_COMPARABLE.get(name)
            variants = sorted(by_row.get(name, {}).items()) or [((0, name), {})]
            for (rank, label), found in variants:
                shown = name if rank == 0 else label
                if note:
                    shown += f" (not comparable: {note})"
                if any(r.synthetic for r in found.values()):
                    shown += " (synthetic)"
                papers = [_num(prow[a]) if rank == 0 else "" for a in PAPER_ALGORITHMS]
                ours = [marked_cell(found[c[0]]) if c[0] in found else "" for c in columns]
                refs = [_num(dabs2.get((name, a), float("nan"))) if rank == 0 else "" for a in dabs2_cols]
                table.append([domain, shown, str(prow["metric"]), *papers, *ours, *refs])
                if rank == 0:
                    for c in columns:
                        if c[0] in found:
                            ours_means[c[0]].append(found[c[0]].mean)
        total = len(block)
        ours = [
            f"**{_num(_mean(v))}**" if len(v) == total else (f"{len(v)}/{total} run" if v else "")
            for v in ours_means.values()
        ]
        refs = [
            _num(_mean([dabs2.get((str(n), a), float("nan")) for n in block["dataset"]]))
            if all((str(n), a) in dabs2 for n in block["dataset"])
            else ""
            for a in dabs2_cols
        ]
        table.append(
            [
                f"**{domain}**",
                "**domain mean**",
                "",
                *[f"**{_num(block[a].mean())}**" for a in PAPER_ALGORITHMS],
                *ours,
                *refs,
            ]
        )
    return markdown_table(header, table)


# --------------------------------------------------------------------------------------------- plot


def plot(summary: pd.DataFrame, path: Path) -> None:
    """One panel per (section, domain): bars per dataset and column (error bars: the 95 % t-interval of the mean
    over seeds; none for one seed), paper values as markers. Each panel's title names its experiment, protocol
    and fingerprint, so no panel mixes protocols."""
    from matplotlib import colormaps

    panels = [
        (section, domain)
        for section in _sections(summary)
        for domain in sorted(_part(summary, section)["domain"].unique())
    ]
    labels = sorted(
        set(summary["column"]), key=lambda c: (algorithm_order(summary["algorithm"]).index(c.split(" [")[0]), c)
    )
    colors = {c: colormaps["tab10"](i % 10) for i, c in enumerate(labels)}
    with figure(path, len(panels), figsize=(12, 2.9 * max(len(panels), 1)), dpi=100) as (fig, axes):
        for ax, (section, domain) in zip(axes, panels):
            part = _part(summary, section)
            block = part[part["domain"] == domain]
            columns = [c[0] for c in _section_columns(block)]
            rows = [r[-1] for r in _section_rows(block)]
            width = 0.8 / max(len(columns), 1)
            paper_label = "paper"
            for i, column in enumerate(columns):
                values = block[block["column"] == column].drop_duplicates("row").set_index("row").reindex(rows)
                xs = [d + (i - (len(columns) - 1) / 2) * width for d in range(len(rows))]
                ax.bar(xs, values["mean"].fillna(0), width, color=colors[column], label=column)
                half = values["ci_high"] - values["mean"]
                with_interval = [(x, m, h) for x, m, h in zip(xs, values["mean"], half) if not pd.isna(h)]
                if with_interval:
                    ax.errorbar(
                        [x for x, _, _ in with_interval],
                        [m for _, m, _ in with_interval],
                        yerr=[h for _, _, h in with_interval],
                        fmt="none",
                        ecolor="black",
                        elinewidth=0.8,
                        capsize=2,
                    )
                if column in PAPER_ALGORITHMS and values["paper"].notna().any():
                    ax.scatter(xs, values["paper"], marker="_", s=200, color="black", zorder=3, label=paper_label)
                    paper_label = None
            ax.set_xticks(
                range(len(rows)),
                rows,
                fontsize=8,
                rotation=20 if len(rows) > 5 else 0,
                ha="right" if len(rows) > 5 else "center",
            )
            ax.set_title(f"{section[0]} · protocol {section[1]} [{section[2]}] — {domain}", fontsize=9, loc="left")
            ax.set_ylabel(", ".join(sorted(block["metric"].unique())), fontsize=8)
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.suptitle(
            "Linear-probe transfer after pretraining (mean over seeds, error bars: 95 % t-interval; none "
            "for one seed), one panel per protocol and domain",
            fontsize=11,
            x=0.01,
            ha="left",
        )


# --------------------------------------------------------------------------------------------- build


CSV_COLUMNS = [
    *SECTION_KEYS,
    "domain",
    "dataset",
    "display_name",
    "row",
    "dataset_fingerprint",
    "metric",
    "algorithm",
    "column",
    "algorithm_fingerprint",
    "mean",
    "std",
    "n",
    "synthetic",
    "paper",
    "delta",
    "paper_note",
    "dabs2_readme",
    "ci_low",
    "ci_high",
    "rank",
    "test",
    "p_vs_none",
    "p_vs_none_holm",
    "sig_vs_none",
    "p_vs_emix",
    "p_vs_emix_holm",
    "sig_vs_emix",
]
#: CSV columns written with 6 significant digits (p-values can be far below the other columns' 4 decimals).
P_COLUMNS = ["p_vs_none", "p_vs_none_holm", "p_vs_emix", "p_vs_emix_holm"]


def to_csv(summary: pd.DataFrame) -> str:
    """The tidy CSV: one line per cell, :data:`CSV_COLUMNS` (``ci_low`` / ``ci_high``: 95 % t-interval; ``rank``:
    within the row; ``test``: the test's name where one was run; ``p_vs_*``: raw and Holm-adjusted p-values
    against each baseline; ``sig_vs_*``: better / worse / n.s., empty when not tested). Mean ranks and domain
    means are not stored: they are the means of ``rank`` / ``mean`` over a domain's unmarked rows (``row``
    without a ``[ds ...]`` suffix)."""
    frame = summary[CSV_COLUMNS].copy()
    for column in P_COLUMNS:
        frame[column] = [("" if pd.isna(p) else f"{p:.6g}") for p in frame[column]]
    return frame.to_csv(index=False, float_format="%.4f", lineterminator="\n")


def build_table(
    results_dirs: Sequence[Path],
    out_dir: Path | None = None,
    paper_table: Path = PAPER_TABLE,
    reference: bool = False,
    dabs2_table: Path | None = DABS2_README_TABLE,
) -> dict[str, Path]:
    """Rebuild table.md / table.csv / table.png (and table_reference.md with ``reference``) in ``out_dir``
    (default: the first results dir)."""
    out_dir = Path(out_dir or results_dirs[0])
    records, problems = load_records(results_dirs)
    for problem in problems:
        print(f"skipped unreadable record {problem}", file=sys.stderr)
    if records.empty:
        raise FileNotFoundError(
            f"no result records under {', '.join(str(Path(d) / 'records') for d in results_dirs)}: run an experiment first"
        )
    paper = read_reference(paper_table, PAPER_ALGORITHMS)
    dabs2 = read_reference(dabs2_table, DABS2_ALGORITHMS)
    summary = summarize(records, paper, dabs2)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "table.md", "csv": out_dir / "table.csv", "png": out_dir / "table.png"}
    write_text_atomic(paths["md"], to_markdown(summary, records, paper, dabs2))
    write_text_atomic(paths["csv"], to_csv(summary))
    plot(summary, paths["png"])
    if reference:
        if paper is None:
            raise FileNotFoundError(f"the paper's table {paper_table} is missing: cannot write table_reference.md")
        paths["reference"] = out_dir / "table_reference.md"
        write_text_atomic(paths["reference"], to_reference_markdown(summary, records, paper, dabs2))
    return paths
