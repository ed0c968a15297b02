"""The disk a sweep's data caches need, without reading data.

Examples x the cache's row shape and dtype where the reader's cache format is known (images uint8
``[3, H, W]``, X-rays uint8 ``[1, H, W]``, speech float16 ``[1, mels, frames]``, text int32
``[max_length]`` + an 8-byte label), else the figure stated in the YAML's ``data.size`` (``+ N GB
preprocessed cache``), else ``unknown``. Each item has a key that is the same for caches two
datasets share (:func:`dabs_rq.plan.estimate.make_plan` counts those once).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from dabs_rq.plan.datasets import examples, yaml_path
from dabs_rq.plan.render import size_text

#: Reader arguments that change labels or window draws but not the cached rows (caches built
#: with different values are the same file).
CACHE_NEUTRAL_ARGS = frozenset(
    {"label", "tasks", "uncertain", "pathologies", "train_windows", "test_windows", "grid_stride"}
)


@dataclass
class CacheItem:
    """The preprocessed cache of one dataset split (``split="all"``: a figure for the whole dataset)."""

    dataset: str
    split: str
    bytes: int | None
    status: str  # computed | at least | stated | unknown
    how: str
    shared_with: list[str] = field(default_factory=list)
    key: str = field(default="", repr=False)


_STATED = re.compile(r"\+\s*(?:about\s+)?([\d.]+)\s*(KB|MB|GB|TB)\s+preprocessed cache", re.IGNORECASE)
_UNITS = {"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}


def stated_cache(dataset: DictConfig) -> int | None:
    """Bytes of the preprocessed cache the YAML's ``data.size`` states (``+ N GB preprocessed cache``)."""
    match = _STATED.search(str((dataset.get("data") or {}).get("size", "")))
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()]) if match else None


def _row_format(dataset: DictConfig) -> tuple[int, str] | None:
    """Bytes per cached example and a description of the row, for readers whose cache format is known."""
    target = str(dataset.reader._target_)
    first = dataset.inputs[0]
    if target.startswith("dabs_rq.data.readers.images."):
        if target.endswith(".imagenet") and not dataset.reader.get("memmap", True):
            return 0, "decoded on the fly (reader.memmap: false), nothing cached"
        channels, (h, w) = int(first.channels), (int(s) for s in first.image_size)
        return channels * h * w, f"uint8 [{channels}, {h}, {w}] per image"
    if target.startswith("dabs_rq.data.readers.xray."):
        h, w = (int(s) for s in first.image_size)
        return h * w, f"uint8 [1, {h}, {w}] per image"
    if target.startswith("dabs_rq.data.readers.speech."):
        channels, (h, w) = int(first.channels), (int(s) for s in first.image_size)
        return 2 * channels * h * w, f"float16 [{channels}, {h}, {w}] per clip"
    if target == "dabs_rq.data.readers.text.mc4":
        return 0, "streamed and tokenized on the fly, nothing cached"
    if target.startswith("dabs_rq.data.readers.text."):
        length = int(dataset.reader.get("max_length", first.seq_len))
        return 4 * length + 8, f"int32 [{length}] ids + an 8-byte label per example"
    return None


def _cache_key(dataset: DictConfig, split: str) -> str:
    args = {
        k: v for k, v in OmegaConf.to_container(dataset.reader, resolve=True).items() if k not in CACHE_NEUTRAL_ARGS
    }
    if split == "train":
        args.pop("eval_split", None)
    options = OmegaConf.to_container(dataset.get("reader_options") or OmegaConf.create({}), resolve=True)
    return json.dumps([args, options, split], sort_keys=True, default=str)


def cache_items(dataset: DictConfig, splits: Sequence[str], reader_overridden: bool) -> list[CacheItem]:
    """The cache of ``splits`` of a dataset: computed where the format and counts are known, else stated
    in its YAML (whole dataset), else unknown."""
    name = str(dataset.name)
    counts = examples(dataset, reader_overridden)
    row = None if reader_overridden else _row_format(dataset)
    stated = stated_cache(dataset)
    items = []
    for split in splits:
        count = counts.train if split == "train" else counts.test
        if row is not None and (row[0] == 0 or count is not None):
            size = row[0] * (count or 0)
            speech_train = split == "train" and str(dataset.reader._target_).startswith("dabs_rq.data.readers.speech.")
            how = f"{count:,} x {row[1]}" if row[0] else row[1]
            if speech_train:  # clips longer than the window also cache their last window
                items.append(
                    CacheItem(name, split, size, "at least", f"{how}, + last windows of long clips (count unknown)")
                )
            else:
                status = "computed" if not counts.approx else "computed (approx. counts)"
                items.append(CacheItem(name, split, size, status, how))
        else:
            why = "cache format unknown" if row is None else f"{split} examples unknown"
            items.append(CacheItem(name, split, None, "unknown", why))
    if stated is not None and any(i.status in ("unknown", "at least") for i in items):
        lower = sum(i.bytes or 0 for i in items if i.status != "unknown")
        note = f"; computed lower bound {size_text(lower)}" if lower else ""
        overridden = "; dataset_overrides change its reader: the figure is for the YAML's" if reader_overridden else ""
        how = f"{yaml_path(name)} data.size, whole dataset{note}{overridden}"
        items = [CacheItem(name, "all", stated, "stated", how)]
    for item in items:
        item.key = _cache_key(dataset, item.split)
    return items
