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
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

DATA_ENV = "DABS_DATA"
DOWNLOAD_MODES = ("auto", "manual", "streaming")


class DatasetMissingError(FileNotFoundError):
    """A dataset's files are not on disk (the message says what, where, and how to get them)."""


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
        return DatasetStatus(cfg.name, cfg.domain, cfg.role, "embedded", "(ships with the installed packages)",
                             "-")
    mode = cfg.data.get("download", "manual")
    if mode == "streaming":
        state = "streaming"
    elif not missing_paths(cfg, root):
        state = "present"
    else:
        state = "downloadable" if mode == "auto" else "missing"
    return DatasetStatus(cfg.name, cfg.domain, cfg.role, state, str(dataset_folder(cfg, root)),
                         str(cfg.data.get("size", "?")))


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
    lines = ["| dataset | role | domain | download | size | license | source | manual steps |",
             "|---|---|---|---|---|---|---|---|"]
    for cfg in sorted((c for c in configs if "data" in c), key=lambda c: (str(c.domain), str(c.name))):
        data = cfg.data
        cells = [f"`{cfg.name}`", str(cfg.role), str(cfg.domain), str(data.get("download", "manual")),
                 str(data.get("size", "?")), str(data.get("license", "?")), str(data.get("source", "?")),
                 " ".join(str(data.get("manual_steps", "") or "").split()) or "-"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"
