"""Result records as one DataFrame, and the pieces the results table and the ablation summaries share.

Both summaries read the records the same way (:func:`load_records`: one row per readable record,
its protocol made explicit, unreadable records reported rather than fatal), reduce seeds the same
way (:func:`aggregate`, :func:`cell`: mean ± std [95 % t-interval] (seeds)), print Markdown tables the same way
(:func:`markdown_table`) and draw their plots through :func:`figure` (written atomically, with no
software version in the PNG, so rebuilding from the same records gives byte-identical files).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dabs_rq.hashing import digest
from dabs_rq.io import atomic_path
from dabs_rq.results.protocol import flatten
from dabs_rq.results.statistics import t_half_width

#: Fields every record must have to be summarised.
RECORD_FIELDS = ("dataset", "domain", "algorithm", "seed", "metric", "value")
#: The keys of a section: records of different sections are never averaged together.
SECTION_KEYS = ["experiment", "protocol", "protocol_fingerprint"]
#: Protocol name (and experiment, algorithm or dataset fingerprint) of records that predate them (schema 1).
UNRECORDED = "unrecorded"
#: Legacy records: the config groups that make up their protocol settings, less what cannot change numbers.
LEGACY_CONFIG_GROUPS = ("model", "pretrain", "transfer", "trainer", "dataset_overrides")
LEGACY_IGNORED = frozenset(
    {
        "pretrain.num_workers",
        "pretrain.checkpoint_every_n_steps",
        "pretrain.checkpoint_every_minutes",
        "trainer.enable_progress_bar",
        "trainer.enable_model_summary",
        "trainer.enable_checkpointing",
        "trainer.log_every_n_steps",
    }
)
#: The columns of :func:`load_records`' frame; the ``*_settings`` columns hold canonical JSON of flat settings,
#: ``path`` the record's file.
RECORD_COLUMNS = [
    "dataset",
    "display_name",
    "domain",
    "algorithm",
    "seed",
    "metric",
    "value",
    "paper_name",
    "synthetic",
    "command",
    "git_commit",
    *SECTION_KEYS,
    "protocol_settings",
    "algorithm_fingerprint",
    "algorithm_settings",
    "dataset_fingerprint",
    "dataset_settings",
    "path",
]


def canonical(obj: Any) -> str:
    """Compact sorted JSON of ``obj``: equal settings give equal strings."""
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def _protocol(record: dict) -> tuple[str, str, dict]:
    """(name, fingerprint, flat settings) of a record; legacy records get protocol ``unrecorded`` with a
    fingerprint of their stored config (``legacy`` when they have none)."""
    protocol = record.get("protocol")
    if isinstance(protocol, dict) and protocol.get("name") and protocol.get("fingerprint"):
        settings = protocol.get("settings")
        return (
            str(protocol["name"]),
            str(protocol["fingerprint"]),
            flatten(settings if isinstance(settings, dict) else {}),
        )
    config = record.get("config")
    if isinstance(config, dict):
        groups = {k: config[k] for k in LEGACY_CONFIG_GROUPS if k in config}
        settings = {k: v for k, v in flatten(groups).items() if k not in LEGACY_IGNORED}
        return UNRECORDED, digest(settings), settings
    return UNRECORDED, "legacy", {}


def _experiment(record: dict, path: Path, records_dir: Path) -> str:
    """The record's experiment, else the first folder under ``records/`` (``records/<experiment>/...``)."""
    if record.get("experiment"):
        return str(record["experiment"])
    parts = path.relative_to(records_dir).parts
    return parts[0] if len(parts) > 1 else UNRECORDED


def _flat_json(value: Any) -> str:
    """Canonical JSON of the flattened settings mapping (``{}`` for anything else)."""
    return canonical(flatten(value if isinstance(value, dict) else {}))


def _row(record: Any, path: Path, records_dir: Path) -> dict[str, Any]:
    """One frame row of a parsed record; ValueError / TypeError / KeyError when it is not a usable record."""
    if not isinstance(record, dict):
        raise TypeError("not a JSON object")
    missing = [f for f in RECORD_FIELDS if f not in record]
    if missing:
        raise ValueError(f"missing fields {', '.join(missing)}")
    name, fingerprint, settings = _protocol(record)
    return {
        "dataset": str(record["dataset"]),
        "display_name": str(record.get("display_name", record["dataset"])),
        "domain": str(record["domain"]),
        "algorithm": str(record["algorithm"]),
        "seed": record["seed"],
        "metric": str(record["metric"]),
        "value": float(record["value"]),
        "paper_name": record.get("paper_name"),
        "synthetic": bool(record.get("synthetic")),
        "command": record.get("command"),
        "git_commit": record.get("git_commit"),
        "experiment": _experiment(record, path, records_dir),
        "protocol": name,
        "protocol_fingerprint": fingerprint,
        "protocol_settings": canonical(settings),
        "algorithm_fingerprint": str(record.get("algorithm_fingerprint") or UNRECORDED),
        "algorithm_settings": _flat_json(record.get("algorithm_settings")),
        "dataset_fingerprint": str(record.get("dataset_fingerprint") or UNRECORDED),
        "dataset_settings": _flat_json(record.get("datasets")),
        "path": str(path),
    }


def load_records(results_dirs: Iterable[Path | str], under: str = "") -> tuple[pd.DataFrame, list[str]]:
    """Every readable record under ``<dir>/records/<under>`` of each dir, as one row of :data:`RECORD_COLUMNS`,
    and a ``"path: why"`` line per record that could not be read (a torn or foreign file must not stop a
    summary of all the others)."""
    rows, problems = [], []
    for root in results_dirs:
        records_dir = Path(root) / "records"
        for path in sorted((records_dir / under).glob("**/*.json")):
            try:
                rows.append(_row(json.loads(path.read_text(encoding="utf-8")), path, records_dir))
            except (OSError, ValueError, TypeError, KeyError) as err:
                problems.append(f"{path}: {err}")
    return pd.DataFrame(rows, columns=RECORD_COLUMNS), problems


def aggregate(records: pd.DataFrame, keys: Sequence[str], **extra: tuple[str, str]) -> pd.DataFrame:
    """One row per ``keys`` group (sorted; NaN keys kept): ``mean``, ``std`` (NaN for one seed) and ``n`` of
    ``value``, plus ``extra`` named aggregations (``column=(source, function)``), then ``ci_low`` / ``ci_high``:
    the 95 % t-interval of the mean over seeds (NaN for one seed)."""
    summary = (
        records.groupby(list(keys), dropna=False, sort=True)
        .agg(mean=("value", "mean"), std=("value", "std"), n=("value", "size"), **extra)
        .reset_index()
    )
    summary["n"] = summary["n"].astype(int)
    half = [t_half_width(s, n) for s, n in zip(summary["std"], summary["n"])]
    summary["ci_low"] = [m - h for m, h in zip(summary["mean"], half)]
    summary["ci_high"] = [m + h for m, h in zip(summary["mean"], half)]
    return summary


#: What a :func:`cell` shows, for the notes under a table.
CELL_LEGEND = (
    "mean ± std [95 % CI] (seeds): mean and sample std over seeds, the 95 % t-interval of the mean "
    "(mean ± t(0.975; n−1)·std/√n; none for one seed) and the number of seeds"
)


def cell(mean: float, std: float, n: float) -> str:
    """A summary cell: ``mean ± std [low, high] (seeds)`` with the 95 % t-interval of the mean, ``mean (seeds)``
    for one seed (no spread, no interval), empty when nothing was run."""
    if pd.isna(mean):
        return ""
    n = int(n)
    if n < 2 or pd.isna(std):
        return f"{mean:.2f} ({n})"
    half = t_half_width(std, n)
    return f"{mean:.2f} ± {std:.2f} [{mean - half:.2f}, {mean + half:.2f}] ({n})"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub Markdown table of ready-formatted cells (kept as written: no number parsing)."""
    frame = pd.DataFrame([list(r) for r in rows], columns=list(header), dtype=object)
    return frame.to_markdown(index=False, tablefmt="github", disable_numparse=True)


@contextlib.contextmanager
def figure(path: Path, nrows: int, figsize: tuple[float, float], dpi: int) -> Iterator[tuple[Any, Sequence[Any]]]:
    """A matplotlib figure (Agg, so no display is needed) of ``nrows`` stacked axes: ``(fig, axes)``. When the
    block succeeds it is laid out and written to ``path`` as PNG (atomically, with no ``Software`` entry, so
    the bytes depend on the plot alone); it is closed either way."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # constrained layout keeps a suptitle and legends outside the axes clear of the panels (tight_layout does not)
    fig, axes = plt.subplots(nrows, 1, figsize=figsize, squeeze=False, layout="constrained")
    try:
        yield fig, list(axes[:, 0])
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi, metadata={"Software": None})
    finally:
        plt.close(fig)
