"""Where real datasets live on disk, whether they are there, and what to tell the user if not.

Datasets are found under a data root (``data_root`` config, else ``$DABS_DATA``, else
``./DATASETS``), one folder per dataset. A dataset YAML describes its files in a ``data``
block::

    data:
      folder: cifar10                  # under the data root (default: the dataset name)
      check: [cifar-10-batches-py]     # paths that exist once the data is in place
      download: auto                   # auto (the library downloads it) | manual | streaming
      source: https://www.cs.toronto.edu/~kriz/cifar.html
      size: 178 MB
      license: unknown (research use)
      manual_steps: ""                 # what to do by hand, for download=manual

Also here, for every reader: what to do with corrupt data (:class:`CorruptDataError`,
:class:`CorruptLog`, the readers' ``on_corrupt`` argument); what a split leaves out and why
(:class:`LeftOut`: the split Dataset's ``excluded`` attribute, ``{reason: count}``, which the
runner stores in the record, and one log line); downloading a file with its checksums checked
(:func:`download`, every reader's one downloader); and extracting downloaded archives without
letting a member escape the target folder (:func:`extract_archive`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from omegaconf import DictConfig

from dabs_rq.errors import UserError

log = logging.getLogger(__name__)

DATA_ENV = "DABS_DATA"
DOWNLOAD_MODES = ("auto", "manual", "streaming")
#: What a reader does with a corrupt sample file or table row: stop with its path, or skip and count it.
ON_CORRUPT = ("error", "skip")
#: What a generic reader does with examples it cannot use as its YAML asks (``reader.unlabelled``: no
#: label; ``reader.short``: a recording shorter than ``window``): stop in one line, or leave them out
#: and count them (:class:`LeftOut`).
POLICIES = ("error", "skip")
#: ``excluded`` reason of the examples left out as corrupt (``on_corrupt=skip``)
CORRUPT = "corrupt (on_corrupt=skip)"


class DatasetMissingError(FileNotFoundError):
    """A dataset's files are not on disk (the message says what, where, and how to get them)."""


# --------------------------------------------------------------------------- corrupt data


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


class CorruptDataError(UserError):
    """A data file, or one line (row) of a table, is corrupt, truncated or malformed.

    The one-line message names the file (and the 1-based line of a text table, or row of a
    parquet file: ``unit``) and what is wrong: ``corrupt data: <path>[ line <n>]: <reason>``.
    """

    def __init__(
        self, path: str | os.PathLike, reason: str | None = None, line: int | None = None, unit: str = "line"
    ) -> None:
        self.path, self.line, self.unit = str(path), None if line is None else int(line), str(unit)
        self.reason = _one_line(reason) if reason is not None else ""
        # (a bare message when re-raised from a DataLoader worker, which passes one string)
        super().__init__(f"corrupt data: {self.where}: {self.reason}" if reason is not None else self.path)

    @property
    def where(self) -> str:
        """``<path>`` or ``<path> line <n>``."""
        return self.path if self.line is None else f"{self.path} {self.unit} {self.line}"

    def __reduce__(self):  # picklable (loader workers, DDP), keeping path, reason and line
        return type(self), (self.path, self.reason, self.line, self.unit)

    def to_record(self) -> list:
        """A JSON-able record, for caches that remember what was skipped (see :meth:`from_record`)."""
        return [self.path, self.reason, self.line, self.unit]

    @classmethod
    def from_record(cls, record: Iterable) -> CorruptDataError:
        path, reason, line, *unit = list(record)
        return cls(path, reason, None if line in (None, "") else int(line), *unit)


def check_on_corrupt(on_corrupt: object) -> str:
    """``on_corrupt`` if it is one of :data:`ON_CORRUPT`, else a one-line :class:`UserError`."""
    if on_corrupt not in ON_CORRUPT:
        raise UserError(f"on_corrupt must be one of {', '.join(ON_CORRUPT)}; got {on_corrupt!r}")
    return str(on_corrupt)


class CorruptLog:
    """The corrupt samples of one split of a dataset, handled as ``on_corrupt`` says.

    ``"error"``: :meth:`add` raises the :class:`CorruptDataError` (the run stops, naming the
    file). ``"skip"``: :meth:`add` records it; the reader leaves the sample out and calls
    :meth:`report` once, which logs ONE line for the split:
    ``skipped N corrupt files in <dataset> <split>, first: <path>: <reason>``.
    """

    def __init__(self, dataset: str, split: str, on_corrupt: str = "error") -> None:
        self.dataset, self.split, self.on_corrupt = str(dataset), str(split), check_on_corrupt(on_corrupt)
        self.errors: list[CorruptDataError] = []
        self._seen: set[tuple[str, int | None]] = set()

    @property
    def skip(self) -> bool:
        return self.on_corrupt == "skip"

    def add(self, error: CorruptDataError) -> None:
        """Raise ``error`` (``"error"``) or remember it (``"skip"``; the same file/line is counted once)."""
        if not self.skip:
            raise error
        key = (error.path, error.line)
        if key not in self._seen:
            self._seen.add(key)
            self.errors.append(error)

    def extend(self, errors: Iterable[CorruptDataError]) -> None:
        for error in errors:
            self.add(error)

    def __len__(self) -> int:
        return len(self.errors)

    def summary(self) -> str:
        lines = {e.line is not None for e in self.errors}
        noun = "rows" if lines == {True} else "files" if lines == {False} else "files/rows"
        first = self.errors[0]
        return (
            f"skipped {len(self.errors)} corrupt {noun} in {self.dataset} {self.split}, "
            f"first: {first.where}: {first.reason}"
        )

    def report(self, kept: int | None = None) -> None:
        """Log the summary line (if anything was skipped); with ``kept == 0`` raise: nothing usable is left."""
        if not self.errors:
            return
        if kept == 0:
            first = self.errors[0]
            raise CorruptDataError(
                first.path,
                f"nothing is left of {self.dataset} {self.split} after skipping "
                f"{len(self.errors)} corrupt samples (first: {first.reason})",
                first.line,
                first.unit,
            )
        log.warning(self.summary())


# --------------------------------------------------------------------------- examples left out


class UnusableExamplesError(UserError):
    """Examples a reader cannot use as its YAML asks (no label, shorter than a window), under policy
    ``error``: one line with the count, the first few, and the YAML key that fixes it."""


def refuse(key: str, count: int, what: str, names: Sequence[str], fix: str) -> UnusableExamplesError:
    """The one-line error for ``count`` unusable examples (``names``: the first few) under ``reader.<key>: error``.

    ``reader.<key>: <count> <what> (<first three>, ...); <fix>, or set reader.<key>: skip to leave
    them out (counted in the record)``.
    """
    shown = ", ".join(str(n) for n in list(names)[:3]) + (", ..." if count > 3 else "")
    return UnusableExamplesError(
        _one_line(
            f"reader.{key}: {count} {what} ({shown}); {fix}, or set "
            f"reader.{key}: skip to leave them out (counted in the record)"
        )
    )


class LeftOut:
    """What one split of a dataset leaves out, by reason: the split Dataset's ``excluded`` attribute.

    The contract every reader keeps: the Dataset it returns for a split has ``excluded``, a plain
    ``dict[str, int]`` mapping a reason (which names its unit, e.g. ``"recordings not in
    labels_csv"``, ``"recordings shorter than window"``, :data:`CORRUPT`) to how many examples of
    that split were left out for it; ``{}`` when nothing was. Examples that belong to no split (a
    ``split_column`` value that is neither ``train_value`` nor ``test_value``) are counted in both
    splits' dicts under a reason that says so. :meth:`attach` sets the attribute and logs ONE
    line per split (``left out of <dataset> <split>: 3 recordings not in labels_csv (a.npy, ...);
    81 recordings shorter than window``), at every load, cached or not.
    """

    def __init__(self, dataset: str, split: str, counts: dict[str, int] | None = None) -> None:
        self.dataset, self.split = str(dataset), str(split)
        self.counts: dict[str, int] = {str(k): int(v) for k, v in (counts or {}).items() if int(v) > 0}
        self.names: dict[str, list[str]] = {}

    def add(self, reason: str, count: int = 1, names: Iterable[Any] = ()) -> None:
        """Count ``count`` more examples left out for ``reason`` (``names``: some of them, for the line)."""
        if count <= 0:
            return
        self.counts[reason] = self.counts.get(reason, 0) + int(count)
        shown = self.names.setdefault(reason, [])
        shown += [str(n) for n in list(names)[: max(0, 3 - len(shown))]]

    def __len__(self) -> int:
        return sum(self.counts.values())

    def line(self) -> str:
        parts = []
        for reason, count in self.counts.items():
            shown = self.names.get(reason)
            parts.append(
                f"{count} {reason}" + (f" ({', '.join(shown)}{', ...' if count > len(shown) else ''})" if shown else "")
            )
        return f"left out of {self.dataset} {self.split}: " + "; ".join(parts)

    def state(self) -> dict:
        """Counts and shown names as plain data (storable in a ``weights_only`` tensor cache)."""
        return {"counts": dict(self.counts), "names": {k: list(v) for k, v in self.names.items()}}

    @classmethod
    def from_state(cls, dataset: str, split: str, state: dict | None) -> LeftOut:
        left = cls(dataset, split, (state or {}).get("counts"))
        left.names = {str(k): [str(n) for n in v] for k, v in ((state or {}).get("names") or {}).items()}
        return left

    def attach(self, dataset: Any) -> Any:
        """``dataset`` with ``excluded`` set to the counts (a plain dict), after logging the line (if any)."""
        if self.counts:
            log.warning(self.line())
        dataset.excluded = dict(self.counts)
        return dataset


def data_root(configured: str | os.PathLike | None = None) -> Path:
    return Path(configured or os.environ.get(DATA_ENV) or "DATASETS").expanduser()


def dataset_folder(cfg: DictConfig, root: Path) -> Path:
    return Path(root) / str(cfg.data.get("folder", cfg.name))


@dataclass(frozen=True)
class DatasetStatus:
    name: str
    domain: str
    role: str
    state: str  # present | missing | downloadable | streaming | embedded
    path: str
    size: str


def missing_paths(cfg: DictConfig, root: Path) -> list[Path]:
    folder = dataset_folder(cfg, root)
    checks = list(cfg.data.get("check") or [""])
    return [folder / c for c in checks if not (folder / c).exists()]


def status(cfg: DictConfig, root: Path) -> DatasetStatus:
    if "data" not in cfg:
        return DatasetStatus(cfg.name, cfg.domain, cfg.role, "embedded", "(ships with the installed packages)", "-")
    mode = cfg.data.get("download", "manual")
    if mode == "streaming":
        state = "streaming"
    elif not missing_paths(cfg, root):
        state = "present"
    else:
        state = "downloadable" if mode == "auto" else "missing"
    return DatasetStatus(
        cfg.name, cfg.domain, cfg.role, state, str(dataset_folder(cfg, root)), str(cfg.data.get("size", "?"))
    )


def require(cfg: DictConfig, root: Path, allow_download: bool) -> Path:
    """The dataset's folder, or a :class:`DatasetMissingError` that says how to get the data."""
    folder = dataset_folder(cfg, root)
    mode = cfg.data.get("download", "manual")
    if mode == "streaming":
        return folder
    missing = missing_paths(cfg, root)
    if not missing or (mode == "auto" and allow_download):
        return folder
    source = cfg.data.get("source", "see the dataset's YAML")
    if mode == "auto":
        how = f"re-run with download=true to fetch it from {source}"
    else:
        steps = str(cfg.data.get("manual_steps", "")).strip()
        how = f"download it by hand from {source}" + (f" ({steps})" if steps else "")
    raise DatasetMissingError(
        f"dataset '{cfg.name}' is not on disk: missing {', '.join(str(p) for p in missing)}; "
        f"{how}, and put it in {folder} (data root: data_root=... or ${DATA_ENV})"
    )


def sources_markdown(configs: list[DictConfig]) -> str:
    """A Markdown table of every real dataset: source, size, license, download mode and manual steps."""
    lines = [
        "| dataset | role | domain | download | size | license | source | manual steps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cfg in sorted((c for c in configs if "data" in c), key=lambda c: (str(c.domain), str(c.name))):
        data = cfg.data
        cells = [
            f"`{cfg.name}`",
            str(cfg.role),
            str(cfg.domain),
            str(data.get("download", "manual")),
            str(data.get("size", "?")),
            str(data.get("license", "?")),
            str(data.get("source", "?")),
            " ".join(str(data.get("manual_steps", "") or "").split()) or "-",
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- archives


class UnsafeArchiveError(ValueError):
    """An archive holds a member that would be written outside the target folder (or a device file)."""


def _unsafe_name(name: str) -> bool:
    """Absolute (POSIX or Windows), or with a ``..`` component."""
    if not name or name.startswith(("/", "\\")) or PureWindowsPath(name).drive or PurePosixPath(name).is_absolute():
        return True
    return ".." in name.replace("\\", "/").split("/")


def _check_tar_member(member: tarfile.TarInfo, dest: str) -> None:
    if _unsafe_name(member.name):
        raise UnsafeArchiveError(f"member {member.name!r} has an absolute path or a '..' component")
    try:
        tarfile.data_filter(member, dest)  # Python >= 3.11.4 (pyproject's requires-python)
    except tarfile.FilterError as err:
        raise UnsafeArchiveError(_one_line(err)) from err


def extract_archive(
    archive: str | os.PathLike, to_path: str | os.PathLike | None = None, remove_finished: bool = False
) -> Path:
    """Extract a tar (any compression: ``.tar``, ``.tar.gz``, ``.tgz``, ...) or zip archive into ``to_path``.

    Safe against path traversal: every member is checked before anything is written, and the
    whole archive is refused (:class:`UnsafeArchiveError`, naming archive and member) when one
    has an absolute path or a ``..`` component, or (tar) is a link leaving the folder or a
    device file; tar members are then extracted with tarfile's ``data`` filter. (torchvision's
    and torchaudio's extractors use no filter.) ``to_path`` defaults to the archive's folder.
    """
    archive = Path(archive)
    dest = Path(to_path) if to_path is not None else archive.parent
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for name in z.namelist():
                    if _unsafe_name(name):
                        raise UnsafeArchiveError(f"member {name!r} has an absolute path or a '..' component")
                dest.mkdir(parents=True, exist_ok=True)
                z.extractall(dest)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                for member in members:
                    _check_tar_member(member, os.path.realpath(dest))
                dest.mkdir(parents=True, exist_ok=True)
                tar.extractall(dest, members=members, filter="data")
        else:
            raise CorruptDataError(archive, "not a tar or zip archive (or a truncated one)")
    except UnsafeArchiveError as err:
        raise UnsafeArchiveError(f"refusing to extract {archive}: {err}") from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
        raise CorruptDataError(archive, f"cannot extract archive ({type(err).__name__}: {err})") from err
    if remove_finished:
        archive.unlink()
    return dest


def _digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checksum_problem(path: Path, md5: str | None, sha256: str | None) -> str | None:
    """What does not match (``sha256`` may be a prefix of the digest, as torchaudio publishes them), else None."""
    if md5 is not None and _digest(path, "md5") != md5:
        return f"md5 is not the published {md5}"
    if sha256 is not None and not _digest(path, "sha256").startswith(sha256):
        return f"sha256 does not start with the published {sha256}"
    return None


def download(url: str, path: str | os.PathLike, md5: str | None = None, sha256: str | None = None) -> Path:
    """``url`` saved as the file ``path`` (its folder made), unless a file there already matches the checksums.

    The one downloader of every reader: ``torch.hub.download_url_to_file`` writes to a temporary
    file renamed when complete, so an interrupted download never leaves a partial file at ``path``.
    ``md5`` and ``sha256`` (the published digests; ``sha256`` may be a prefix) are checked on the
    file already there (a match is kept, without a checksum any file is) and on the download: a
    download that does not match is removed and a :class:`CorruptDataError` names it.
    """
    from torch.hub import download_url_to_file

    path = Path(path).expanduser()
    if path.is_file() and _checksum_problem(path, md5, sha256) is None:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # sha256 is checked while downloading; a mismatch leaves no file
        download_url_to_file(url, str(path), hash_prefix=sha256, progress=True)
    except RuntimeError as err:
        if "invalid hash value" not in str(err):
            raise
        raise CorruptDataError(
            path,
            f"downloaded from {url}, but its sha256 does not start with the published {sha256} (not kept; try again)",
        ) from None
    problem = _checksum_problem(path, md5, None)
    if problem is not None:
        path.unlink()
        raise CorruptDataError(path, f"downloaded from {url}, but its {problem} (not kept; try again)")
    return path


def download_and_extract(
    url: str,
    download_root: str | os.PathLike,
    extract_root: str | os.PathLike | None = None,
    md5: str | None = None,
    remove_finished: bool = False,
    sha256: str | None = None,
) -> None:
    """:func:`download` ``url`` into ``download_root`` (as its base name; checksums checked), then
    :func:`extract_archive` it into ``extract_root`` (default: ``download_root``)."""
    archive = download(url, Path(download_root) / os.path.basename(url), md5=md5, sha256=sha256)
    extract_archive(archive, extract_root if extract_root is not None else download_root, remove_finished)
