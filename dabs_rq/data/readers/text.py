"""DABS's text datasets: GLUE and WikiText-103 (English), PAWS-X and mC4 (multilingual).

Every example becomes ``((input_ids,), label)`` with ``input_ids`` an int32 ``[max_length]``
tensor: DABS feeds only the ids of a pretrained tokenizer (bert-base-uncased for English,
xlm-roberta-base for multilingual), padded and truncated to 128, sentence pairs encoded as a
pair. Tokenizers come from ``<data_root>/tokenizers/<name>`` when present (see
:mod:`dabs_rq.data.readers.tokenize`), ``data_root`` being the parent of the dataset folder.

Files are read with Hugging Face ``datasets`` from the dataset folder, in the layout of the
hub repositories (``<config>/<split>-NNNNN-of-NNNNN.parquet``) or of the original archives
(GLUE and PAWS-X TSVs, WikiText ``wiki.*.tokens``, C4 ``json.gz`` shards). With
``download=true`` a missing split is fetched from the hub into the same layout, so later
runs are offline. Token ids are cached as ``.npy`` files under ``cache_dir`` (keyed by the
source files, split, tokenizer and length) and memory-mapped, so a re-run does not tokenize.

mC4 is read as a stream (:func:`mc4`), tokenized on the fly; see :class:`TokenStream`.

Corrupt data (``on_corrupt``: ``"error"`` | ``"skip"``): a TSV line with another number of
fields than the header, or not UTF-8, and a row (TSV or parquet) whose label is missing or
malformed (not a number, not integral, not one of the label strings, or a missing STS-B
score) stops the run with a :class:`CorruptDataError` naming the file and line (row), or is
left out and counted in one summary line per split. Rows DABS drops on purpose (an empty
input; PAWS-X's unlabelled ``-1`` pairs) are not corrupt and are dropped as before, but counted:
one line per split says how many, and the split Dataset's ``excluded`` (``{reason: count}``,
with the corrupt rows skipped) holds them for the record. A file
that cannot be read at all (a truncated parquet shard) always stops the run, naming it. The
original TSVs are read line by line here (``datasets``' csv builder would pad short lines
and skip long ones, without saying which).
"""

from __future__ import annotations

import codecs
import csv
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from dabs_rq.data.array_cache import ArrayDataset, cache_key, load_array, source_identity
from dabs_rq.data.readers.tokenize import encode, load_tokenizer
from dabs_rq.data.splits import check_split
from dabs_rq.data.storage import CORRUPT, CorruptDataError, CorruptLog, DatasetMissingError, LeftOut, check_on_corrupt
from dabs_rq.io import atomic_path, write_array_atomic, write_json_atomic

log = logging.getLogger(__name__)

BERT = "bert-base-uncased"
XLMR = "xlm-roberta-base"
GLUE_HUB = "nyu-mll/glue"
PAWSX_HUB = "google-research-datasets/paws-x"
WIKITEXT_HUB = "Salesforce/wikitext"
C4_HUB = "allenai/c4"
#: DABS's mC4 languages, in its interleaving order.
MC4_LANGUAGES = ("en", "fr", "de", "zh", "es", "ja", "ko")
#: Bump when the preprocessing changes, so old caches are not reused (2: the dropped rows are counted).
CACHE_VERSION = 2
#: ``excluded`` reasons of the rows DABS drops on purpose
EMPTY_INPUT = "rows with an empty input (drop_empty, as DABS)"
UNLABELLED = "rows labelled -1 (unlabelled, as DABS)"
#: Original-archive file names of the hub split names (GLUE ``dev.tsv``, PAWS-X ``dev_2k.tsv``, ...).
GLUE_TSV_FILES = {
    "train": "train.tsv",
    "validation": "dev.tsv",
    "validation_matched": "dev_matched.tsv",
    "validation_mismatched": "dev_mismatched.tsv",
}
NLI3 = {"entailment": 0, "neutral": 1, "contradiction": 2}
NLI2 = {"entailment": 0, "not_entailment": 1}


@dataclass(frozen=True)
class GlueTask:
    """Columns of one GLUE config: on the hub (parquet) and in the original TSVs (label strings mapped)."""

    inputs: tuple[str, ...]
    tsv_inputs: tuple[str, ...]
    tsv_label: str = "label"
    tsv_names: tuple[str, ...] | None = None  # header-less TSV (CoLA): its column names
    label_map: dict[str, int] | None = None
    regression: bool = False


GLUE_TASKS = {
    "cola": GlueTask(("sentence",), ("sentence",), tsv_names=("source", "label", "original_label", "sentence")),
    "sst2": GlueTask(("sentence",), ("sentence",)),
    "mrpc": GlueTask(("sentence1", "sentence2"), ("#1 String", "#2 String"), tsv_label="Quality"),
    "qqp": GlueTask(("question1", "question2"), ("question1", "question2"), tsv_label="is_duplicate"),
    "stsb": GlueTask(("sentence1", "sentence2"), ("sentence1", "sentence2"), tsv_label="score", regression=True),
    "mnli": GlueTask(("premise", "hypothesis"), ("sentence1", "sentence2"), tsv_label="gold_label", label_map=NLI3),
    "qnli": GlueTask(("question", "sentence"), ("question", "sentence"), label_map=NLI2),
    "rte": GlueTask(("sentence1", "sentence2"), ("sentence1", "sentence2"), label_map=NLI2),
    "wnli": GlueTask(("sentence1", "sentence2"), ("sentence1", "sentence2")),
}


# ----------------------------------------------------------------------------------------------
# Where a split is on disk


@dataclass(frozen=True)
class TableSplit:
    """One split of a text table on disk and how ``datasets`` reads it (see :func:`open_stream`).

    ``builder`` is a packaged ``datasets`` builder (``parquet``, ``csv``, ``text``) and
    ``options`` its keyword arguments; ``inputs`` are the text columns (two for a pair task),
    ``label`` the label column (None: unlabelled, label 0), ``label_map`` maps label strings
    of the original TSVs to ints.
    """

    name: str
    builder: str
    files: tuple[Path, ...]
    inputs: tuple[str, ...]
    label: str | None = "label"
    label_map: dict[str, int] | None = None
    regression: bool = False
    options: dict = field(default_factory=dict)

    def fingerprint(self, data_root: Path | None) -> str:
        """Identity of the source files under the resolved ``data_root`` for the cache key
        (:func:`~dabs_rq.data.array_cache.source_identity`: contents of small files, else size and mtime)."""
        return source_identity(data_root, tables=self.files)


def tsv_options(columns: Sequence[str], names: Sequence[str] | None = None) -> dict:
    """``datasets`` csv-builder options for GLUE/PAWS-X TSVs: tab-separated, quotes literal, all strings.

    GLUE and PAWS-X TSVs are not quoted (``"`` is text), may start with a byte-order mark
    (MRPC) and have empty cells that must stay ``""`` rather than become NaN.
    """
    from datasets import Features, Value

    options = {
        "sep": "\t",
        "quoting": csv.QUOTE_NONE,
        "keep_default_na": False,
        "encoding": "utf-8-sig",
        "on_bad_lines": "warn",
        "usecols": list(columns),
        "features": Features({c: Value("string") for c in columns}),
    }
    if names is not None:
        options.update(header=None, column_names=list(names))
    return options


def hub_files(folder: Path, split: str) -> tuple[Path, ...]:
    """The parquet shards of ``split`` in a hub-layout config folder (``<split>-NNNNN-of-NNNNN.parquet``)."""
    return tuple(sorted(folder.glob(f"{split}-*.parquet")))


def fetch_from_hub(repo_id: str, patterns: Sequence[str], root: Path) -> None:
    """Download the files of a hub dataset repository matching ``patterns`` into ``root``, keeping its layout.

    The files land exactly where the local readers look for them, so later runs need no network
    (``huggingface_hub`` keeps its download metadata under ``root/.cache``).
    """
    from huggingface_hub import snapshot_download

    log.info("downloading %s from https://huggingface.co/datasets/%s into %s", ", ".join(patterns), repo_id, root)
    snapshot_download(repo_id=repo_id, repo_type="dataset", allow_patterns=list(patterns), local_dir=str(root))


def locate(folder: Path, split: str, original: Path, repo_id: str, download: bool) -> tuple[tuple[Path, ...], bool]:
    """The files of one split and whether they are the ``original`` archive's file rather than hub parquet.

    Order: hub parquet shards of ``split`` in ``folder``; else the ``original`` file; else, with
    ``download``, the shards fetched from hub repository ``repo_id`` into ``folder``.
    """
    shards = hub_files(folder, split)
    if shards:
        return shards, False
    if original.is_file():
        return (original,), True
    pattern = f"{folder.name}/{split}-*.parquet"
    if download:
        fetch_from_hub(repo_id, [pattern], folder.parent)
        shards = hub_files(folder, split)
        if shards:
            return shards, False
        raise DatasetMissingError(f"https://huggingface.co/datasets/{repo_id} has no files matching {pattern}")
    raise DatasetMissingError(
        f"{folder} has neither {split}-*.parquet (layout of https://huggingface.co/datasets/{repo_id}) nor "
        f"{original.name} (original archive); re-run with download=true to fetch the parquet files"
    )


def glue_table(root: Path, config: str, split: str, download: bool) -> TableSplit:
    """Split ``split`` (hub name) of GLUE config ``config`` under ``root`` (hub parquet or original TSV)."""
    task = GLUE_TASKS[config]
    folder = root / config
    files, is_original = locate(folder, split, folder / GLUE_TSV_FILES[split], GLUE_HUB, download)
    name = f"glue-{config}-{split}"
    if not is_original:
        return TableSplit(name, "parquet", files, task.inputs, "label", regression=task.regression)
    columns = (*task.tsv_inputs, task.tsv_label)
    return TableSplit(
        name,
        "csv",
        files,
        task.tsv_inputs,
        task.tsv_label,
        task.label_map,
        task.regression,
        tsv_options(columns, task.tsv_names),
    )


def paws_x_table(root: Path, language: str, split: str, download: bool) -> TableSplit:
    """Split ``split`` (hub name) of PAWS-X ``language`` under ``root`` (hub parquet or ``x-final`` TSV)."""
    folder = root / language
    if split == "train":
        original = "train.tsv" if language == "en" else "translated_train.tsv"
    else:
        original = {"validation": "dev_2k.tsv", "test": "test_2k.tsv"}[split]
    files, is_original = locate(folder, split, folder / original, PAWSX_HUB, download)
    inputs = ("sentence1", "sentence2")
    name = f"paws-x-{language}-{split}"
    if not is_original:
        return TableSplit(name, "parquet", files, inputs, "label")
    return TableSplit(name, "csv", files, inputs, "label", options=tsv_options((*inputs, "label")))


def wikitext_table(root: Path, config: str, split: str, download: bool) -> TableSplit:
    """Split ``split`` (hub name) of WikiText under ``root`` (hub parquet or the zip's ``wiki.*.tokens``)."""
    folder = root / config
    original = folder / f"wiki.{'valid' if split == 'validation' else split}.tokens"
    files, is_original = locate(folder, split, original, WIKITEXT_HUB, download)
    name = f"{config}-{split}"
    if not is_original:
        return TableSplit(name, "parquet", files, ("text",), None)
    return TableSplit(name, "text", files, ("text",), None, options={"keep_linebreaks": False})


# ----------------------------------------------------------------------------------------------
# Reading, filtering, tokenizing and caching a split


def open_stream(builder: str, files: Sequence[Path], cache_dir: Path, **options: Any) -> Any:
    """Local files as a ``datasets.IterableDataset`` read by the packaged ``builder`` (parquet, csv, text, json).

    Goes through ``Dataset.from_<builder>(..., streaming=True)`` rather than ``load_dataset``, which
    would also send a usage-count request to the hub for every local read (a DNS timeout offline).
    """
    from datasets import Dataset

    readers = {
        "parquet": Dataset.from_parquet,
        "csv": Dataset.from_csv,
        "text": Dataset.from_text,
        "json": Dataset.from_json,
    }
    return readers[builder](
        [str(f) for f in files], streaming=True, cache_dir=str(cache_dir / "hf_datasets"), **options
    )


#: where a row comes from: (file, 1-based line of a text table or row of a parquet file, "line" | "row")
Where = tuple[Path, int, str]


def tsv_rows(
    path: Path, columns: Sequence[str], names: Sequence[str] | None = None, encoding: str = "utf-8-sig"
) -> Iterator[tuple[int, list[str] | CorruptDataError]]:
    """``(line, [cell of each of columns])`` per line of a GLUE / PAWS-X TSV (tabs, quotes literal, no NaN).

    What ``datasets``' csv builder with :func:`tsv_options` reads, line by line: the header
    (or ``names``) gives the columns, blank lines are skipped, a byte-order mark is dropped. A
    line with another number of fields than the header, or that is not UTF-8, comes as a
    :class:`CorruptDataError` instead of cells.
    """
    bom = codecs.BOM_UTF8 if encoding == "utf-8-sig" else b""
    header = list(names) if names is not None else None
    where: list[int] = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if n == 1 and bom and raw.startswith(bom):
                raw = raw[len(bom) :]
            raw = raw.rstrip(b"\r\n")
            if not raw:
                continue
            try:
                fields = raw.decode("utf-8").split("\t")
            except UnicodeDecodeError as err:
                yield n, CorruptDataError(path, f"not UTF-8 ({err})", n)
                continue
            if header is None:
                header = fields
                missing = [c for c in columns if c not in header]
                if missing:
                    raise CorruptDataError(path, f"no column {', '.join(map(repr, missing))} in the header", n)
                continue
            if not where:
                where = [header.index(c) for c in columns]
            if len(fields) != len(header):
                yield n, CorruptDataError(path, f"expected {len(header)} tab-separated fields, got {len(fields)}", n)
                continue
            yield n, [fields[i] for i in where]


def _read_error(path: Path, err: Exception) -> CorruptDataError:
    return CorruptDataError(path, f"cannot be read ({type(err).__name__}: {' '.join(str(err).split())})")


def _stream_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged parquet / text / json file through ``datasets`` raises."""
    import pyarrow
    from datasets.exceptions import DatasetGenerationError

    return ValueError, OSError, EOFError, pyarrow.ArrowException, DatasetGenerationError


def iter_batches(
    table: TableSplit, cache_dir: Path, corrupt: CorruptLog | None = None, batch_size: int = 4096
) -> Iterator[tuple[dict[str, list], list[Where]]]:
    """Column batches of a split, streamed from its files (nothing converted to Arrow on disk), with each row's origin.

    The original TSVs are read by :func:`tsv_rows` (malformed lines go to ``corrupt``,
    default: raise); parquet and text files through ``datasets``, one file at a time. A file
    that cannot be read stops with a :class:`CorruptDataError` naming it.
    """
    corrupt = corrupt if corrupt is not None else CorruptLog(table.name, "")
    columns = [*table.inputs, *([table.label] if table.label else [])]
    if table.builder == "csv":
        names = table.options.get("column_names")
        encoding = table.options.get("encoding", "utf-8-sig")
        for path in table.files:
            batch: dict[str, list] = {c: [] for c in columns}
            where: list[Where] = []
            for n, cells in tsv_rows(path, columns, names, encoding):
                if isinstance(cells, CorruptDataError):
                    corrupt.add(cells)
                    continue
                for c, cell in zip(columns, cells):
                    batch[c].append(cell)
                where.append((path, n, "line"))
                if len(where) == batch_size:
                    yield batch, where
                    batch, where = {c: [] for c in columns}, []
            if where:
                yield batch, where
        return
    errors = _stream_errors()
    unit = "line" if table.builder == "text" else "row"
    for path in table.files:
        start = 1
        try:
            data = open_stream(table.builder, [path], cache_dir, **table.options)
            for batch in data.select_columns(columns).iter(batch_size=batch_size):
                count = len(batch[columns[0]])
                yield batch, [(path, start + k, unit) for k in range(count)]
                start += count
        except errors as err:
            raise _read_error(path, err) from err


def parse_labels(
    table: TableSplit, values: Sequence[Any] | None, where: Sequence[Where], corrupt: CorruptLog
) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, valid)``: :func:`convert_labels` of well-formed labels; a malformed one goes to ``corrupt``.

    Malformed: missing (``None`` / empty), not a number, not integral (classification),
    below -1 (-1 is "unlabelled", dropped as DABS does), not one of ``label_map``'s strings,
    or a non-finite STS-B score.
    """
    count = len(where)
    valid = np.ones(count, dtype=bool)
    if values is None:
        return np.zeros(count, dtype=np.int64), valid
    labels = np.zeros(count, dtype=np.float32 if table.regression else np.int64)
    for k, v in enumerate(values):
        problem = None
        if v is None or v == "":
            problem = "no label"
        elif table.label_map is not None:
            if v in table.label_map:
                labels[k] = table.label_map[v]
            else:
                problem = f"label {v!r} is not one of {', '.join(table.label_map)}"
        else:
            try:
                number = float(v)
            except (TypeError, ValueError):
                number = None
            if number is None or not np.isfinite(number):
                problem = f"label {v!r} is not a number"
            elif table.regression:
                labels[k] = number
            elif number != int(number) or number < -1:
                problem = f"label {v!r} is not a class (an integer >= 0, or -1: unlabelled)"
            else:
                labels[k] = int(number)
        if problem is not None:
            path, n, unit = where[k]
            corrupt.add(CorruptDataError(path, f"{table.label}: {problem}", n, unit))
            valid[k] = False
    return labels, valid


def convert_labels(table: TableSplit, values: Sequence[Any] | None, count: int) -> np.ndarray:
    """Labels as int64 (-1: missing/unknown) or float32 (regression; NaN: missing); zeros if unlabelled."""
    if values is None:
        return np.zeros(count, dtype=np.int64)
    if table.regression:
        return np.array([float(v) if v not in (None, "") else np.nan for v in values], dtype=np.float32)
    if table.label_map is not None:
        return np.array([table.label_map.get(v, -1) for v in values], dtype=np.int64)
    return np.array([int(float(v)) if v not in (None, "") else -1 for v in values], dtype=np.int64)


def keep_rows(texts: Sequence[Sequence[str]], labels: np.ndarray, drop_empty: bool) -> np.ndarray:
    """Rows to keep: a valid label (>= 0, or not NaN) and, with ``drop_empty``, no empty input text."""
    keep = ~np.isnan(labels) if labels.dtype.kind == "f" else labels >= 0
    if drop_empty:
        for column in texts:
            keep &= np.array([bool(t.strip()) for t in column], dtype=bool)
    return keep


def tokenizer_identity(name: str, data_root: Path) -> str:
    """What decides the ids a tokenizer gives: its local folder (and when it changed), else its hub name."""
    local = Path(data_root) / "tokenizers" / name
    if local.is_dir():
        return f"{local.resolve()}@{max(p.stat().st_mtime_ns for p in local.iterdir())}"
    return name


def tokenize_table(
    table: TableSplit,
    tokenizer: str,
    data_root: Path,
    max_length: int,
    drop_empty: bool,
    cache_dir: Path,
    corrupt: CorruptLog | None = None,
    dropped: dict[str, int] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids [n, max_length] int32, labels [n]) chunks of the kept rows of a split; corrupt rows go to ``corrupt``.

    ``dropped`` (filled as the rows are read) counts the well-formed rows left out on purpose:
    :data:`UNLABELLED` (label -1) and :data:`EMPTY_INPUT` (``drop_empty``).
    """
    tok = load_tokenizer(tokenizer, data_root)
    corrupt = corrupt if corrupt is not None else CorruptLog(table.name, "")
    dropped = dropped if dropped is not None else {}
    total = 0
    for batch, where in iter_batches(table, cache_dir, corrupt):
        texts = [[t if t is not None else "" for t in batch[c]] for c in table.inputs]
        labels, valid = parse_labels(table, batch[table.label] if table.label else None, where, corrupt)
        labelled = keep_rows(texts, labels, False) & valid
        keep = keep_rows(texts, labels, drop_empty) & valid
        total += int(valid.sum())
        for reason, count in (
            (UNLABELLED, int((valid & ~labelled).sum())),
            (EMPTY_INPUT, int((labelled & ~keep).sum())),
        ):
            if count:
                dropped[reason] = dropped.get(reason, 0) + count
        kept = [[t for t, k in zip(column, keep) if k] for column in texts]
        if kept[0]:
            ids = encode(tok, kept[0], kept[1] if len(kept) > 1 else None, max_length=max_length)
            yield ids.numpy(), labels[keep]
    log.info(
        "%s: %d of %d rows kept (%d dropped: empty input or no label)",
        table.name,
        total - sum(dropped.values()),
        total,
        sum(dropped.values()),
    )


def save_arrays(
    ids_path: Path,
    labels_path: Path,
    chunks: Iterable[tuple[np.ndarray, np.ndarray]],
    max_length: int,
    before: Callable[[], None] | None = None,
) -> None:
    """Write the chunks as two ``.npy`` files, atomically (labels first; the ids file marks completion).

    ``before()``, if given, runs once every chunk is computed and before anything is written.
    """
    ids_chunks, label_chunks = [], []
    for ids, labels in chunks:
        ids_chunks.append(ids)
        label_chunks.append(labels)
    if before is not None:
        before()
    labels = np.concatenate(label_chunks) if label_chunks else np.zeros(0, dtype=np.int64)
    count = sum(len(c) for c in ids_chunks)
    write_array_atomic(labels_path, labels)
    with atomic_path(ids_path, suffix=".npy") as tmp_ids:
        array = np.lib.format.open_memmap(tmp_ids, mode="w+", dtype=np.int32, shape=(count, max_length))
        start = 0
        while ids_chunks:
            chunk = ids_chunks.pop(0)
            array[start : start + len(chunk)] = chunk
            start += len(chunk)
        array.flush()
        del array


def token_dataset(
    table: TableSplit,
    cache_dir: Path,
    tokenizer: str,
    data_root: Path,
    max_length: int,
    drop_empty: bool,
    corrupt: CorruptLog | None = None,
) -> ArrayDataset:
    """The kept rows of a split as ``((input_ids,), label)``, tokenized once and memory-mapped from the cache.

    Skipping corrupt rows (``corrupt.skip``) keeps other rows than stopping would, so it has
    its own cache, beside which the skipped rows are remembered (``.skipped.json``, written
    before the arrays) and replayed into ``corrupt`` on every load. An unreadable cache file
    (or one holding pickled objects) is rebuilt, never unpickled.
    """
    corrupt = corrupt if corrupt is not None else CorruptLog(table.name, "")
    key = cache_key(
        files=table.fingerprint(data_root),
        builder=table.builder,
        inputs=table.inputs,
        label=table.label,
        label_map=table.label_map,
        regression=table.regression,
        max_length=max_length,
        tokenizer=tokenizer_identity(tokenizer, data_root),
        drop_empty=drop_empty,
        version=CACHE_VERSION,
        **({"on_corrupt": "skip"} if corrupt.skip else {}),
    )
    folder = Path(cache_dir) / "text"
    ids_path, labels_path = folder / f"{table.name}-{key}.ids.npy", folder / f"{table.name}-{key}.labels.npy"
    skipped_path = folder / f"{table.name}-{key}.skipped.json"
    dropped_path = folder / f"{table.name}-{key}.dropped.json"
    ids, labels = load_array(ids_path), load_array(labels_path, mmap=False)
    dropped = _read_counts(dropped_path)
    if ids is None or labels is None or len(ids) != len(labels) or dropped is None:
        dropped = {}

        def remember_skipped() -> None:
            if corrupt.skip:
                write_json_atomic(skipped_path, [e.to_record() for e in corrupt.errors], indent=None)
            write_json_atomic(dropped_path, dropped, indent=None)

        chunks = tokenize_table(table, tokenizer, data_root, max_length, drop_empty, Path(cache_dir), corrupt, dropped)
        save_arrays(ids_path, labels_path, chunks, max_length, before=remember_skipped)
        ids, labels = np.load(ids_path, mmap_mode="r"), np.load(labels_path)
    elif corrupt.skip and skipped_path.exists():
        corrupt.extend(CorruptDataError.from_record(r) for r in json.loads(skipped_path.read_text()))
    corrupt.report(kept=len(labels))
    left = LeftOut(corrupt.dataset, corrupt.split, dropped)
    left.add(f"rows {CORRUPT}", len(corrupt))
    return left.attach(ArrayDataset([ids], labels, dtypes=[torch.int32]))


def _read_counts(path: Path) -> dict[str, int] | None:
    """``{reason: count}`` saved beside a cache; None when missing or unreadable (the cache is rebuilt)."""
    try:
        data = json.loads(Path(path).read_text())
        return {str(k): int(v) for k, v in data.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return None


# ----------------------------------------------------------------------------------------------
# Readers named by the dataset YAMLs


def glue(
    split: str,
    cache_dir: Path,
    root: Path,
    download: bool = False,
    config: str = "cola",
    eval_split: str = "validation",
    tokenizer: str = BERT,
    max_length: int = 128,
    drop_empty: bool = True,
    on_corrupt: str = "error",
) -> ArrayDataset:
    """A GLUE task as DABS uses it: GLUE train for ``train``, ``eval_split`` (a validation split) for ``test``.

    GLUE's test labels are hidden, so DABS evaluates on validation; rows with an empty input
    are dropped (``drop_empty``); pair tasks are tokenized as a pair. Labels: int 0/1 (0/1/2
    for MNLI) or a float 0-5 for STS-B.
    """
    check_split(split)
    corrupt = CorruptLog(f"glue/{config}", split, on_corrupt)
    if config not in GLUE_TASKS:
        raise ValueError(f"config must be one of {', '.join(GLUE_TASKS)}; got {config!r}")
    if eval_split == "train" or eval_split not in GLUE_TSV_FILES:
        raise ValueError(
            f"eval_split must be a validation split ({', '.join(list(GLUE_TSV_FILES)[1:])}); got {eval_split!r}"
        )
    table = glue_table(Path(root), config, "train" if split == "train" else eval_split, download)
    return token_dataset(table, cache_dir, tokenizer, Path(root).parent, max_length, drop_empty, corrupt)


def paws_x(
    split: str,
    cache_dir: Path,
    root: Path,
    download: bool = False,
    language: str = "en",
    tokenizer: str = XLMR,
    max_length: int = 128,
    drop_empty: bool = False,
    on_corrupt: str = "error",
) -> ArrayDataset:
    """PAWS-X ``language``: its train split for ``train``, validation (2,000 pairs) for ``test``, as DABS.

    Rows whose label is not 0/1 (the hub marks unlabelled pairs -1) are always dropped: BCE
    and accuracy are undefined for them. DABS keeps rows with an empty (untranslated)
    sentence; ``drop_empty`` drops them instead.
    """
    check_split(split)
    corrupt = CorruptLog(f"paws-x/{language}", split, on_corrupt)
    table = paws_x_table(Path(root), language, "train" if split == "train" else "validation", download)
    return token_dataset(table, cache_dir, tokenizer, Path(root).parent, max_length, drop_empty, corrupt)


def wikitext(
    split: str,
    cache_dir: Path,
    root: Path,
    download: bool = False,
    config: str = "wikitext-103-v1",
    tokenizer: str = BERT,
    max_length: int = 128,
    on_corrupt: str = "error",
) -> ArrayDataset:
    """WikiText (DABS: ``wikitext-103-v1``, the ``<unk>`` version): every non-empty line is one example.

    ``train`` is the train split, ``test`` the validation split; labels are all 0 (unlabelled).
    Lines have no fields to be malformed: ``on_corrupt`` is accepted and checked, and a file
    that cannot be read stops the run naming it.
    """
    check_split(split)
    corrupt = CorruptLog("wikitext", split, on_corrupt)
    table = wikitext_table(Path(root), config, "train" if split == "train" else "validation", download)
    return token_dataset(table, cache_dir, tokenizer, Path(root).parent, max_length, drop_empty=True, corrupt=corrupt)


# ----------------------------------------------------------------------------------------------
# mC4: a stream


class TokenStream(IterableDataset):
    """``((input_ids,), 0)`` for every document of a streaming ``datasets.IterableDataset``.

    How pretraining consumes it: the datamodule's pretraining loader is a plain ``DataLoader``
    over this iterable (no sampler, no shuffling by the loader; ``drop_last`` batches of
    ``batch_size``) and training stops at ``pretrain.max_steps``. Documents come in stream
    order, tokenized in chunks of ``chunk`` as they arrive. With loader workers, each worker
    reads its own share of the shards (``datasets`` splits them by worker); under DDP each
    rank reads its own part (``split_dataset_by_node``). Nothing is cached on disk.
    """

    supports_batch_indexing = False

    def __init__(
        self,
        stream: Any,
        tokenizer: str,
        data_root: Path,
        max_length: int = 128,
        text_column: str = "text",
        chunk: int = 256,
    ) -> None:
        super().__init__()
        self.stream, self.tokenizer, self.data_root = stream, tokenizer, Path(data_root)
        self.max_length, self.text_column, self.chunk = int(max_length), text_column, int(chunk)

    def _stream_for_this_rank(self) -> Any:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            from datasets.distributed import split_dataset_by_node

            return split_dataset_by_node(
                self.stream, rank=torch.distributed.get_rank(), world_size=torch.distributed.get_world_size()
            )
        return self.stream

    def _encode(self, tok: Any, texts: list[str]) -> Iterator[tuple[tuple[Tensor], int]]:
        for row in encode(tok, texts, max_length=self.max_length):
            yield (row,), 0

    def __iter__(self) -> Iterator[tuple[tuple[Tensor], int]]:
        tok = load_tokenizer(self.tokenizer, self.data_root)
        texts: list[str] = []
        for example in self._stream_for_this_rank():
            texts.append(example[self.text_column] or "")
            if len(texts) == self.chunk:
                yield from self._encode(tok, texts)
                texts = []
        if texts:
            yield from self._encode(tok, texts)


def c4_pattern(language: str, split: str) -> str:
    """The hub/local path pattern of mC4 shards (``allenai/c4`` layout) of one language and split."""
    suffix = "" if split == "train" else "-validation"
    return f"multilingual/c4-{language}{suffix}.tfrecord-*.json.gz"


def c4_stream(files: Sequence[Path] | None, language: str, split: str, cache_dir: Path) -> Any:
    """One language of mC4 as a ``datasets`` stream: local ``json.gz`` shards, or the hub when ``files`` is None."""
    from datasets import load_dataset

    if files:
        data = open_stream("json", files, cache_dir)
    else:
        data = load_dataset(
            C4_HUB,
            data_files={"train": c4_pattern(language, split)},
            split="train",
            streaming=True,
            cache_dir=str(cache_dir / "hf_datasets"),
        )
    return data.select_columns(["text"])


def mc4(
    split: str,
    cache_dir: Path,
    root: Path,
    download: bool = False,
    languages: Sequence[str] = MC4_LANGUAGES,
    tokenizer: str = XLMR,
    max_length: int = 128,
    shuffle_buffer: int = 0,
    seed: int = 0,
    on_corrupt: str = "error",
) -> TokenStream:
    """mC4 in ``languages``, interleaved round-robin (DABS), as a :class:`TokenStream`.

    ``train`` reads the train shards, ``test`` the validation shards. Local shards in the
    ``allenai/c4`` layout (``<root>/multilingual/c4-<lang>.tfrecord-*.json.gz``) are used
    when any are present (then every language must have some); otherwise the shards are
    streamed from the hub (no download; ``download`` is not needed). Interleaving stops when
    the first language runs out. DABS meant to shuffle but discarded the result, so
    ``shuffle_buffer=0`` (no shuffling) reproduces it; a positive value shuffles documents
    in a buffer of that size (seeded).

    ``on_corrupt`` is accepted and checked, but a stream cannot be checked ahead: a damaged
    shard stops the run when it is reached, whatever the setting (documents are unlabelled).
    """
    from datasets import interleave_datasets

    check_split(split)
    check_on_corrupt(on_corrupt)
    hub_split = "train" if split == "train" else "validation"
    local = {lang: sorted(Path(root).glob(c4_pattern(lang, hub_split))) for lang in languages}
    missing = [lang for lang, files in local.items() if not files]
    if missing and len(missing) < len(languages):
        raise DatasetMissingError(
            f"mC4 shards missing in {Path(root) / 'multilingual'} for {', '.join(missing)} "
            f"(expected {c4_pattern(missing[0], hub_split)}); add them, or remove the local shards to stream "
            f"all languages from https://huggingface.co/datasets/{C4_HUB}"
        )
    try:
        streams = [c4_stream(local[lang] or None, lang, hub_split, Path(cache_dir)) for lang in languages]
    except (ConnectionError, OSError) as err:
        raise DatasetMissingError(
            f"mC4 could not be streamed from https://huggingface.co/datasets/{C4_HUB} ({err}); put "
            f"{c4_pattern('<lang>', hub_split)} shards under {root} to read them locally"
        ) from err
    stream = interleave_datasets(streams) if len(streams) > 1 else streams[0]
    if shuffle_buffer > 0:
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer)
    return TokenStream(stream, tokenizer, Path(root).parent, max_length)
