"""PAMAP2 physical-activity monitoring (Reiss & Stricker 2012), read as DABS's sensor domain.

Files: ``<root>/PAMAP2_Dataset/Protocol/subject10X.dat`` (space-separated text, 54 columns:
timestamp, activity id, heart rate, then 17 columns for each of the hand, chest and ankle
IMUs; missing values are ``NaN``). An example is a window of ``window`` = 320 consecutive
rows (3.2 s at 100 Hz) of the 52 sensor columns of one activity, labelled with the index of
that activity in :data:`ACTIVITIES` (the 11 protocol activities DABS lists). Following
DABS, NaNs are filled per column by linear interpolation and no normalisation is applied;
the rows of one activity of one subject are concatenated in file order before windowing.

DABS draws every example on the fly with the global ``np.random`` (random subject, random
activity, random start), so its train and evaluation sets change every epoch. Here the
windows are fixed once per split (``windows``):

* ``seeded`` (default): ``train_windows`` / ``test_windows`` windows drawn once with DABS's
  sampling law (class-balanced) from ``np.random.RandomState(window_seed)`` (``window_seed + 1``
  for the test split); DABS's epoch sizes are 50,000 / 10,000;
* ``grid``: every window start ``0, grid_stride, ...`` of every (subject, activity) run;
  natural class frequencies.

The interpolated sensor rows are cached as one memory-mapped ``float32`` array per split,
keyed by the resolved data root and each recording's size and mtime (another copy of the
data, or a replaced ``.dat`` file, builds a new cache); windows are gathered from it a batch
at a time.

``on_corrupt`` (``"error"`` | ``"skip"``): a malformed line of a ``.dat`` file (not 54 fields,
e.g. the cut last line of a truncated file, or a field that is not a number) stops the run
naming the file and line, or is left out (the recording continues with the next line) and
counted in one summary line per split. Without checking, pandas would fill a short line's
missing fields with NaN and interpolate them away: silently invented values.

A (subject, activity) run of at most ``window`` rows gives no window (DABS's rule, kept): such
runs are counted, logged in one line and stored in the split Dataset's ``excluded``
(``{reason: count}``, with the lines skipped as corrupt), which the record keeps.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from dabs_rq.data.array_cache import cache_key, load_array, source_identity
from dabs_rq.data.splits import check_split
from dabs_rq.data.storage import CORRUPT, CorruptDataError, CorruptLog, LeftOut, extract_archive
from dabs_rq.data.windows import sliding_windows
from dabs_rq.io import write_array_atomic, write_json_atomic

#: activity ids of the PAMAP2 protocol that DABS uses, in label order (optional activities excluded)
ACTIVITIES = (1, 2, 3, 4, 5, 6, 7, 12, 13, 16, 24)
COLUMNS = [
    "timestamp",
    "activity_id",
    "heart_rate",
    *(f"{part}{i}" for part in ("hand", "chest", "ankle") for i in range(17)),
]
URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/00231/PAMAP2_Dataset.zip"
WINDOW_MODES = ("seeded", "grid")


def protocol_dir(root: Path) -> Path:
    return Path(root) / "PAMAP2_Dataset" / "Protocol"


def _all_lines_complete(raw: bytes, frame: pd.DataFrame, chunk: int = 1 << 24) -> bool:
    """True when every line of ``raw`` surely has as many whitespace-separated fields as ``frame`` has columns.

    Pandas parsed the lines into a plain (range-indexed) frame, so none has more fields than
    it has columns, but it pads a line with fewer (a truncated one) with NaN. Counting every
    field of the file (numpy, a few ms per 100 MB) settles it: one row per line and
    ``columns * lines`` fields in all means no line is short. False: check line by line.
    """
    data = np.frombuffer(raw, dtype=np.uint8)
    fields = newlines = 0
    after_space = True
    for start in range(0, len(data), chunk):
        part = data[start : start + chunk]
        space = part <= 32  # space, tab, CR, LF (other control bytes fail the numeric check later)
        fields += int(np.count_nonzero(space[:-1] & ~space[1:])) + int(after_space and not space[0])
        newlines += int(np.count_nonzero(part == 10))
        after_space = bool(space[-1])
    lines = newlines + (not raw.endswith(b"\n"))
    return isinstance(frame.index, pd.RangeIndex) and len(frame) == lines and fields == len(frame.columns) * lines


def _bad_lines(raw: bytes, fields: int) -> tuple[list[int], dict[int, str]]:
    """Line numbers of the non-blank lines, and ``{line: what is wrong}`` for those without ``fields`` fields."""
    numbers, bad = [], {}
    for n, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        numbers.append(n)
        count = len(line.split())
        if count != fields or not line.isascii():
            bad[n] = f"expected {fields} numbers, got {count} fields" if count != fields else "non-ASCII bytes"
    return numbers, bad


def parse_subject(path: Path, corrupt: CorruptLog | None = None) -> pd.DataFrame:
    """A recording's 54 numeric columns, every line checked; malformed lines go to ``corrupt`` (default: raise).

    The fast path is pandas' C parser plus a whole-file field count (:func:`_all_lines_complete`);
    only a file that fails it is split into lines to find the bad ones.
    """
    corrupt = corrupt if corrupt is not None else CorruptLog(Path(path).name, "")
    raw = Path(path).read_bytes()
    try:
        frame = _parse(raw)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError):
        frame = None  # the lines are checked one by one below
    numbers: list[int] | None = None
    if frame is None or not _all_lines_complete(raw, frame):
        numbers, bad = _bad_lines(raw, len(COLUMNS))
        if bad:
            corrupt.extend(CorruptDataError(path, reason, n) for n, reason in bad.items())
            lines = raw.split(b"\n")
            numbers = [n for n in numbers if n not in bad]
            raw = b"\n".join(lines[n - 1] for n in numbers)
        if bad or frame is None:
            try:
                frame = _parse(raw)
            except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
                raise CorruptDataError(path, f"cannot parse ({' '.join(str(err).split())})") from err
    text_columns = [c for c in COLUMNS if frame[c].dtype.kind not in "fiu"]
    if text_columns:  # a field that is not a number
        numbers = numbers if numbers is not None else _bad_lines(raw, len(COLUMNS))[0]
        values = frame[text_columns].apply(pd.to_numeric, errors="coerce")
        wrong = (values.isna() & frame[text_columns].notna()).to_numpy()
        for row in np.flatnonzero(wrong.any(axis=1)):
            column = text_columns[int(np.flatnonzero(wrong[row])[0])]
            corrupt.add(CorruptDataError(path, f"{column} is {frame[column].iloc[row]!r}, not a number", numbers[row]))
        frame[text_columns] = values
        frame = frame[~wrong.any(axis=1)].reset_index(drop=True)
    return frame


def _parse(raw: bytes) -> pd.DataFrame:
    with warnings.catch_warnings():  # mixed types: a field that is not a number, reported by the caller
        warnings.simplefilter("ignore", pd.errors.DtypeWarning)
        return pd.read_csv(io.BytesIO(raw), sep=r"\s+", header=None, names=COLUMNS)


def read_subject(path: Path, corrupt: CorruptLog | None = None) -> pd.DataFrame:
    """One recording with NaNs interpolated linearly per column (DABS: ``df.interpolate()``).

    ``limit_direction="both"`` also fills NaNs before a column's first value, which DABS
    leaves as NaN; in the real files those rows are transient (activity 0) rows, never used.
    Malformed lines go to ``corrupt`` (see :func:`parse_subject`).
    """
    return parse_subject(path, corrupt).interpolate(limit_direction="both")


def fetch(root: Path, url: str = URL) -> None:
    """Fetch and unpack the UCI archive into ``root`` unless the recordings are already there (safe extraction)."""
    from dabs_rq.data.storage import download_and_extract

    if protocol_dir(root).is_dir():
        return
    download_and_extract(url, root, remove_finished=True)
    inner = Path(root) / "PAMAP2_Dataset.zip"  # the newer UCI archive wraps the original zip
    if not protocol_dir(root).is_dir() and inner.is_file():
        extract_archive(inner, root, remove_finished=True)


def activity_runs(
    root: Path, subjects: Sequence[int], activities: Sequence[int], corrupt: CorruptLog | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """All rows of each (subject, activity) concatenated: ``(rows [N, 52] float32, runs [R, 4])``.

    ``runs`` rows are ``(offset, length, subject, label)``; label = index in ``activities``.
    """
    rows, runs, offset = [], [], 0
    for subject in subjects:
        frame = read_subject(protocol_dir(root) / f"subject{subject}.dat", corrupt)
        for label, activity in enumerate(activities):
            block = frame.loc[frame["activity_id"] == activity, COLUMNS[2:]].to_numpy(np.float32)
            rows.append(block)
            runs.append((offset, len(block), subject, label))
            offset += len(block)
    return np.concatenate(rows), np.asarray(runs, dtype=np.int64).reshape(-1, 4)


def cached_runs(
    path: Path, build: Callable[[], tuple[np.ndarray, np.ndarray]], corrupt: CorruptLog | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, runs)`` from ``path`` (rows memory-mapped), built and saved on first use.

    With a skipping ``corrupt`` log, the lines ``build`` skipped are remembered beside the
    cache (``-skipped.json``, written first) and replayed into the log on every later load.
    An unreadable cache file (or one holding pickled objects) is rebuilt, never unpickled.
    """
    runs_path = path.with_name(path.stem + "-runs.npy")
    skipped_path = path.with_name(path.stem + "-skipped.json")
    rows, runs = load_array(path), load_array(runs_path, mmap=False)
    if rows is not None and runs is not None and runs.ndim == 2 and runs.shape[1] == 4:
        if corrupt is not None and corrupt.skip and skipped_path.exists():
            corrupt.extend(CorruptDataError.from_record(r) for r in json.loads(skipped_path.read_text()))
        return rows, runs
    rows, runs = build()
    if corrupt is not None and corrupt.skip:
        write_json_atomic(skipped_path, [e.to_record() for e in corrupt.errors], indent=None)
    write_array_atomic(path, rows)
    write_array_atomic(runs_path, runs)
    return np.load(path, mmap_mode="r"), np.load(runs_path)


def seeded_windows(runs: np.ndarray, count: int, window: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """DABS's sampler, seeded: ``count`` (row start, label) pairs.

    DABS draws a uniform subject and a uniform activity, redrawing both until that subject has
    more than ``window`` rows of it (so the pair is uniform over such pairs: class-balanced),
    then a uniform start in ``[0, rows - window)``; here the same law, drawn vectorised.
    """
    usable = runs[runs[:, 1] > window]
    if not len(usable):
        raise ValueError(f"no subject has more than {window} rows of any activity: cannot cut windows")
    rng = np.random.RandomState(seed)
    picked = usable[rng.randint(len(usable), size=count)]
    starts = picked[:, 0] + rng.randint(0, picked[:, 1] - window)
    return starts.astype(np.int64), picked[:, 3].astype(np.int64)


def grid_windows(runs: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Every window start ``0, stride, ...`` (below ``length - window``, as DABS) of every run."""
    long_enough = runs[runs[:, 1] > window]
    if not len(long_enough):
        raise ValueError(f"no subject has more than {window} rows of any activity: cannot cut windows")
    starts = [offset + np.arange(0, length - window, stride) for offset, length, _, _ in long_enough]
    labels = [np.full(len(s), run[3]) for s, run in zip(starts, long_enough)]
    return np.concatenate(starts).astype(np.int64), np.concatenate(labels).astype(np.int64)


class WindowDataset(Dataset):
    """Item i is ``((rows[starts[i] : starts[i] + window],), labels[i])``; batch indexing supported.

    Windows are cut by the shared slicer (:func:`dabs_rq.data.windows.sliding_windows`, a view of
    the memory-mapped rows made anew at each access, so the dataset pickles as rows + starts).
    """

    supports_batch_indexing = True

    def __init__(self, rows: np.ndarray, starts: np.ndarray, labels: np.ndarray, window: int) -> None:
        self.rows, self.starts, self.window = rows, np.asarray(starts), int(window)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int | list[int]) -> tuple[tuple[torch.Tensor], torch.Tensor]:
        starts = np.asarray(self.starts[index])
        picked = sliding_windows(self.rows, self.window)[starts.reshape(-1)]  # fancy indexing: a copy
        windows = picked.reshape(*starts.shape, *picked.shape[1:])
        return (torch.from_numpy(np.ascontiguousarray(windows)),), self.labels[index]


def pamap2(
    split: str,
    cache_dir: Path,
    root: Path,
    download: bool = False,
    train_subjects: Sequence[int] = (101, 102, 103, 104, 107, 108, 109),
    test_subjects: Sequence[int] = (105,),
    window: int = 320,
    windows: str = "seeded",
    window_seed: int = 0,
    train_windows: int = 50_000,
    test_windows: int = 10_000,
    grid_stride: int = 160,
    url: str = URL,
    on_corrupt: str = "error",
) -> WindowDataset:
    """Windows ``([window, 52] float32,)`` -> activity label 0..10 of the split's subjects."""
    check_split(split)
    corrupt = CorruptLog("pamap2", split, on_corrupt)
    if windows not in WINDOW_MODES:
        raise ValueError(f"windows must be one of {', '.join(WINDOW_MODES)}; got {windows!r}")
    if download:
        fetch(Path(root), url)
    subjects = [int(s) for s in (train_subjects if split == "train" else test_subjects)]
    # skipping builds other rows than stopping would, so it gets its own cache
    recordings = [protocol_dir(root) / f"subject{subject}.dat" for subject in subjects]
    key = cache_key(
        subjects=subjects,
        activities=ACTIVITIES,
        interpolate="linear-both",
        source=source_identity(root, tables=recordings),
        **({"on_corrupt": "skip"} if corrupt.skip else {}),
    )
    rows, runs = cached_runs(
        Path(cache_dir) / "pamap2" / f"rows-{key}.npy",
        lambda: activity_runs(Path(root), subjects, ACTIVITIES, corrupt),
        corrupt,
    )
    if windows == "seeded":
        count = train_windows if split == "train" else test_windows
        starts, labels = seeded_windows(runs, int(count), window, int(window_seed) + (split == "test"))
    else:
        starts, labels = grid_windows(runs, window, int(grid_stride))
    corrupt.report(kept=len(starts))
    left = LeftOut("pamap2", split)
    short = runs[(runs[:, 1] > 0) & (runs[:, 1] <= window)]
    left.add(
        f"(subject, activity) runs of at most window={window} rows (no window, as DABS)",
        len(short),
        [f"subject {s} activity {ACTIVITIES[a]}" for _, _, s, a in short],
    )
    left.add(f"lines {CORRUPT}", len(corrupt))
    return left.attach(WindowDataset(rows, starts, labels, window))
