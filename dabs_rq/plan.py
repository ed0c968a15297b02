"""``dabs-rq plan [-m] <overrides>``: what a sweep would cost, computed without launching anything.

The jobs are the sweep's own: the config is composed by Hydra exactly as ``dabs-rq -m <overrides>``
composes it, and :func:`dabs_rq.sweep_check.sweep_jobs` enumerates its jobs in launch order (``-m``
is optional: a plan is always of what the multirun would launch). Per job the plan gives the
pretraining steps and samples (``max_steps`` x effective batch; ``none`` does not pretrain), the
transfer datasets with their probe epochs and example counts, and an estimate of GPU-hours; for
the sweep, the total and the disk its data caches need. Nothing is read from the data folders.

Every number says where it comes from, and an assumption is never shown as a measurement:

* Example counts: the dataset YAMLs' own figures and the DABS dataset inventory
  (:data:`KNOWN_EXAMPLES`), the reader's settings where they fix the count (PAMAP2 windows),
  otherwise ``unknown``.
* Throughput (samples/s per GPU), from the benchmark JSONs in ``results/bench`` (``--bench-dir``)
  for one card (``--card``, default: the card of the newest GPU benchmark), or from one file
  (``--bench``): *measured* where a ``pretrain_step`` benchmark has a row of the job's domain and
  algorithm (``samples_per_s``, or ``batch`` and ``step_ms``; its ``none`` row, a frozen forward
  pass, times the transfer's feature extraction; where eager and compiled rows exist (``compiled``),
  the one run as the job's ``model.compile`` is used); otherwise *assumed, not measured*: an
  ``encoder`` benchmark's encoder-only training step at the domain's token count divided by the
  algorithm's encoder passes per step (:data:`ENCODER_PASSES`), and forward-only = that step x
  :data:`FORWARD_SPEEDUP`; with no benchmark at all, :data:`DEFAULT_ENCODER_SAMPLES_PER_S`.
* GPU-hours = samples / per-GPU samples/s (linear scaling over a job's GPUs assumed), plus, with
  ``model.compile`` on, :data:`COMPILE_ALLOWANCE_S` per compiled stage (assumed).
* Cache disk: examples x the cache's row shape and dtype where the reader's cache format is known
  (images uint8 ``[3, H, W]``, X-rays uint8 ``[1, H, W]``, speech float16 ``[1, mels, frames]``,
  text int32 ``[max_length]`` + an 8-byte label), else the figure stated in the YAML's
  ``data.size`` (``+ N GB preprocessed cache``), else ``unknown``. Caches two datasets share
  (the three Fluent Speech tasks, CheXpert pretraining and transfer, MNLI's train split) count once.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dabs_rq.errors import UserError
from dabs_rq.paths import PROJECT_ROOT, RESULTS_DIR

BENCH_DIR = RESULTS_DIR / "bench"

#: Encoder forward + backward passes per pretraining step (emix: mixed + clean; rq: clean + RQ view).
ENCODER_PASSES = {"emix": 2, "rq": 2, "rq_emix": 2, "shed": 1, "mae": 1}
#: Passes assumed for an algorithm not in :data:`ENCODER_PASSES`.
DEFAULT_PASSES = 2
#: Samples/s of one training pass (fwd + bwd + AdamW) of the DABS-size encoder on one GPU when no
#: benchmark exists: a round planning figure, not a measurement.
DEFAULT_ENCODER_SAMPLES_PER_S = 1000.0
#: A forward pass without gradients is taken to run this many times faster than a training pass.
FORWARD_SPEEDUP = 3.0
#: The encoder the ``encoder`` benchmark and the default throughput are of (``conf/model/dabs.yaml``).
DABS_ENCODER = {"dim": 256, "depth": 12, "heads": 8, "dim_head": 64, "mlp_dim": 512}
#: Seconds of ``torch.compile`` allowed per compiled stage (pretraining, each transfer dataset).
COMPILE_ALLOWANCE_S = 120.0

ASSUMED = "assumed, not measured"
DABS_INVENTORY = "DABS dataset inventory (alextamkin/dabs src/datasets)"


@dataclass(frozen=True)
class Examples:
    """Train / test example counts of a dataset (None: unknown) and where they come from."""

    train: int | None
    test: int | None
    source: str
    approx: bool = False


def _yaml(name: str) -> str:
    return f"domains/{name}.yaml"


def _split(total: int, fraction: float) -> tuple[int, int]:
    train = int(total * fraction)
    return train, total - train


#: Example counts of the real datasets (train = what the probe or pretraining reads, test = the
#: scored split), as their YAML comments or the DABS inventory give them. ``approx``: rounded
#: (per-class or per-speaker random splits) or before rows are dropped.
KNOWN_EXAMPLES: dict[str, Examples] = {
    "imagenet": Examples(1_281_167, 50_000, _yaml("imagenet")),
    "cifar10": Examples(50_000, 10_000, _yaml("cifar10")),
    "cu_birds": Examples(5_994, 5_794, _yaml("cu_birds")),
    "vgg_flower": Examples(*_split(8_189, 0.8), f"{_yaml('vgg_flower')}: 8,189 images, 80/20 per class", True),
    "dtd": Examples(3_760, 1_880, _yaml("dtd")),
    "traffic_sign": Examples(*_split(39_209, 0.8), f"{_yaml('traffic_sign')}: 39,209 images, 80/20 per class", True),
    "aircraft": Examples(6_667, 3_333, _yaml("aircraft")),
    "librispeech_transfer": Examples(
        *_split(2_703, 0.8), f"{DABS_INVENTORY}: 2,703 dev-clean utterances, 80/20 per speaker", True
    ),
    "voxceleb1": Examples(138_361 + 6_904, 8_251, f"{DABS_INVENTORY}: iden_split sets 1 + 2 / 3"),
    "audio_mnist": Examples(24_000, 6_000, f"{DABS_INVENTORY}: 30,000 clips, 500 per speaker, 48 / 12 speakers"),
    "google_speech": Examples(None, 11_005, f"{_yaml('google_speech')} (train: all clips + the validation list)"),
    **{
        f"fluent_speech_{slot}": Examples(23_132 + 3_118, 3_793, f"{DABS_INVENTORY}: train + valid / test csv")
        for slot in ("location", "action", "object")
    },
    **{
        name: Examples(train, test, f"{_yaml(name)} (before rows with an empty input are dropped)", True)
        for name, train, test in (
            ("cola", 8_551, 1_043),
            ("mnli_matched", 392_702, 9_815),
            ("mnli_mismatched", 392_702, 9_832),
            ("mrpc", 3_668, 408),
            ("qnli", 104_743, 5_463),
            ("qqp", 363_846, 40_430),
            ("rte", 2_490, 277),
            ("sst2", 67_349, 872),
            ("stsb", 5_749, 1_500),
            ("wnli", 635, 71),
        )
    },
    **{
        f"paws_{lang}": Examples(49_401, 2_000, _yaml(f"paws_{lang}"))
        for lang in ("en", "fr", "es", "de", "zh", "ja", "ko")
    },
    "wikitext103": Examples(1_200_000, None, f"{_yaml('wikitext103')}: ~1.2 M non-empty lines", True),
    "chexpert": Examples(223_414, 234, f"{_yaml('chexpert')}; {DABS_INVENTORY}"),
    "chexpert_transfer": Examples(223_414, 234, f"{_yaml('chexpert')}; {DABS_INVENTORY}"),
    "vqa": Examples(
        248_349, 121_512, f"{DABS_INVENTORY}: questions before those without their answer among the choices", True
    ),
}

#: Reader arguments that change labels or window draws but not the cached rows (caches built
#: with different values are the same file).
CACHE_NEUTRAL_ARGS = frozenset(
    {"label", "tasks", "uncertain", "pathologies", "train_windows", "test_windows", "grid_stride"}
)


# --------------------------------------------------------------------------- dataset facts


def examples(dataset: DictConfig, reader_overridden: bool) -> Examples:
    """The dataset's train / test example counts, as far as they are known without reading data."""
    reader = dataset.reader
    if str(reader._target_).endswith("pamap2.pamap2"):
        if (dataset.get("reader_options") or {}).get("windows", "seeded") == "seeded":
            return Examples(
                int(reader.get("train_windows", 50_000)),
                int(reader.get("test_windows", 10_000)),
                f"{_yaml(dataset.name)} reader.train_windows / test_windows",
            )
        return Examples(None, None, "grid windows: counted when the data is read")
    if str(dataset.name) == "xray8":
        train, test = _split(112_120, float(reader.get("train_fraction", 0.9)))
        return Examples(train, test, f"{_yaml('xray8')}: 112,120 images, reader.train_fraction")
    known = KNOWN_EXAMPLES.get(str(dataset.name))
    if known is None:
        return Examples(None, None, "unknown")
    if reader_overridden:
        return Examples(None, None, f"unknown: dataset_overrides change its reader ({known.source} is for the YAML's)")
    return known


def tokens(dataset: DictConfig) -> int | None:
    """Transformer tokens of one example, CLS included (None for an embedder this cannot count)."""
    total = 1
    for spec in dataset.inputs:
        kind = str(spec._target_).rsplit(".", 1)[-1]
        if kind == "PatchEmbedding2d":
            total += math.prod(int(s) // int(p) for s, p in zip(spec.image_size, spec.patch_size, strict=True))
        elif kind == "TokenEmbedding":
            total += int(spec.seq_len)
        elif kind == "SegmentEmbedding1d":
            total += int(spec.seq_len) // int(spec.segment_size)
        else:
            return None
    return total


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
        note = f"; computed lower bound {_size(lower)}" if lower else ""
        overridden = "; dataset_overrides change its reader: the figure is for the YAML's" if reader_overridden else ""
        how = f"{_yaml(name)} data.size, whole dataset{note}{overridden}"
        items = [CacheItem(name, "all", stated, "stated", how)]
    for item in items:
        item.key = _cache_key(dataset, item.split)
    return items


# --------------------------------------------------------------------------- throughput


@dataclass
class Throughput:
    """Samples/s per GPU of one stage, whether measured, and where the number comes from."""

    samples_per_s: float
    measured: bool
    source: str

    @property
    def label(self) -> str:
        return "measured" if self.measured else ASSUMED


def _card(data: dict) -> str:
    machine = data.get("machine") or {}
    return str(data.get("card") or machine.get("card") or machine.get("gpu") or machine.get("cpu_model") or "?")


def _is_gpu(data: dict) -> bool:
    machine = data.get("machine") or {}
    return str(machine.get("device", "")).startswith("cuda") or bool(data.get("card") or machine.get("gpu"))


def _read_bench(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(f"--bench {path}: cannot read it ({err.strerror or err})") from None
    except json.JSONDecodeError as err:
        raise UserError(f"--bench {path}: not JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise UserError(f"--bench {path}: not a dabs-rq benchmark JSON (no 'rows' list)")
    if not _is_gpu(data):
        raise UserError(f"--bench {path}: a {(data.get('machine') or {}).get('device', '?')} benchmark; give a GPU one")
    data["_path"] = str(path)
    return data


@dataclass
class Bench:
    """The benchmark JSONs a plan's throughputs come from: one card's newest ``pretrain_step`` and ``encoder``."""

    card: str | None = None
    pretrain_step: dict | None = None
    encoder: dict | None = None
    note: str = ""

    @classmethod
    def find(cls, bench_dir: Path, card: str | None, bench_file: Path | None) -> Bench:
        """From ``bench_file`` alone, else the newest full (not ``quick``) GPU runs in ``bench_dir`` of ``card`` (a
        part of the card's name; default: the card of the newest ``pretrain_step`` run, else ``encoder`` run)."""
        if bench_file is not None:
            data = _read_bench(bench_file)
            kind = data.get("benchmark")
            if kind not in ("pretrain_step", "encoder"):
                raise UserError(f"--bench {bench_file}: a {kind!r} benchmark; give a pretrain_step or encoder one")
            return cls(_card(data), data if kind == "pretrain_step" else None, data if kind == "encoder" else None)
        runs = []
        for path in sorted(Path(bench_dir).glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if (
                isinstance(data, dict)
                and _is_gpu(data)
                and not data.get("quick")
                and isinstance(data.get("rows"), list)
            ):
                data["_path"] = str(path)
                runs.append(data)
        runs = [r for r in runs if r.get("benchmark") in ("pretrain_step", "encoder")]
        cards = sorted({_card(r) for r in runs})
        if card is not None:
            runs = [r for r in runs if card.lower() in _card(r).lower()]
            if not runs:
                known = ", ".join(cards) or "none"
                return cls(note=f"no GPU benchmark in {bench_dir} for card {card!r} (cards with one: {known})")
        if not runs:
            return cls(note=f"no GPU benchmark in {bench_dir}")
        runs.sort(key=lambda r: (r.get("benchmark") == "pretrain_step", str(r.get("created", ""))))
        chosen = _card(runs[-1])
        mine = [r for r in runs if _card(r) == chosen]
        newest = {
            kind: max(
                (r for r in mine if r.get("benchmark") == kind), key=lambda r: str(r.get("created", "")), default=None
            )
            for kind in ("pretrain_step", "encoder")
        }
        return cls(chosen, newest["pretrain_step"], newest["encoder"])

    def files(self) -> list[str]:
        """The benchmark files used (relative to the project when inside it)."""
        paths = [Path(d["_path"]) for d in (self.pretrain_step, self.encoder) if d is not None]
        return [
            str(p.resolve().relative_to(PROJECT_ROOT)) if p.resolve().is_relative_to(PROJECT_ROOT) else str(p)
            for p in paths
        ]

    def _where(self, data: dict) -> str:
        return f"{Path(data['_path']).name} ({_card(data)}, {str(data.get('created', '?'))[:10]})"

    def _step_row(
        self, domain: str, algorithm: str, protocol: str | None, compile_on: bool
    ) -> tuple[float, str] | None:
        """Samples/s of the first measured row of (domain, algorithm) at ``protocol``, and how it ran; among rows
        that say whether they ran compiled (``compiled``), one that ran as ``compile_on`` comes first."""
        rows = []
        for row in (self.pretrain_step or {}).get("rows", []):
            if row.get("domain") != domain or row.get("algorithm") != algorithm:
                continue
            if protocol is not None and row.get("protocol") not in (None, protocol):
                continue
            if row.get("samples_per_s"):
                rows.append((row, float(row["samples_per_s"])))
            elif row.get("batch") and row.get("step_ms"):
                rows.append((row, 1000.0 * float(row["batch"]) / float(row["step_ms"])))
        rows.sort(key=lambda r: "compiled" in r[0] and bool(r[0]["compiled"]) != compile_on)  # stable
        if not rows:
            return None
        row, sps = rows[0]
        return sps, "" if "compiled" not in row else " (compiled)" if row["compiled"] else " (eager)"

    def _encoder_row(self, tokens: int | None, variant: str) -> tuple[float, str] | None:
        rows = [r for r in (self.encoder or {}).get("rows", []) if r.get("variant") == variant]
        # samples_per_s: benchmarks/encoder.py; ours_samples_per_s: its earlier rows (ours vs a baseline)
        rows = [
            (int(r.get("tokens") or 0), float(r.get("samples_per_s") or r.get("ours_samples_per_s") or 0)) for r in rows
        ]
        rows = [r for r in rows if r[0] > 0 and r[1] > 0]
        if not rows or tokens is None:
            return None
        exact = [r for r in rows if r[0] == tokens]
        above = sorted(r for r in rows if r[0] >= tokens)
        count, sps = exact[0] if exact else (above[0] if above else max(rows))
        at = f"{count} tokens" + ("" if count == tokens else f", the nearest measured to {tokens}")
        return sps, f"{variant}, {at}: {sps:,.0f} samples/s"

    def _encoder_pass(self, tokens: int | None, precision: str, compile_on: bool) -> tuple[float, str]:
        """Samples/s of one encoder training pass, and where that number comes from."""
        variant = "fp32" if str(precision).startswith("32") else "bf16-autocast"
        proxy = " (fp16 timed as bf16)" if str(precision).startswith("16") else ""
        for name in ([f"{variant}+compile"] if compile_on else []) + [variant]:
            found = self._encoder_row(tokens, name)
            if found is not None:
                return found[0], f"encoder-only step in {self._where(self.encoder)}, {found[1]}{proxy}"
        return DEFAULT_ENCODER_SAMPLES_PER_S, (
            f"dabs_rq.plan.DEFAULT_ENCODER_SAMPLES_PER_S = {DEFAULT_ENCODER_SAMPLES_PER_S:,.0f} samples/s per encoder "
            "training pass, a round planning figure"
        )

    def pretrain(
        self, domain: str, algorithm: str, tokens: int | None, precision: str, compile_on: bool, protocol: str | None
    ) -> Throughput:
        """Pretraining samples/s per GPU of (domain, algorithm)."""
        measured = self._step_row(domain, algorithm, protocol, compile_on)
        if measured is not None:
            return Throughput(
                measured[0], True, f"{self._where(self.pretrain_step)}, row {domain} / {algorithm}{measured[1]}"
            )
        sps, source = self._encoder_pass(tokens, precision, compile_on)
        passes = ENCODER_PASSES.get(algorithm, DEFAULT_PASSES)
        known = "" if algorithm in ENCODER_PASSES else " (assumed for an algorithm this plan does not know)"
        return Throughput(sps / passes, False, f"{source}, / {passes} encoder passes per {algorithm} step{known}")

    def forward(
        self, domain: str, tokens: int | None, precision: str, compile_on: bool, protocol: str | None
    ) -> Throughput:
        """Frozen-encoder forward samples/s per GPU (transfer feature extraction / online probe)."""
        measured = self._step_row(domain, "none", protocol, compile_on)
        if measured is not None:
            return Throughput(
                measured[0],
                True,
                f"{self._where(self.pretrain_step)}, row {domain} / none{measured[1]} (frozen forward)",
            )
        sps, source = self._encoder_pass(tokens, precision, compile_on)
        return Throughput(
            sps * FORWARD_SPEEDUP, False, f"{source}, x {FORWARD_SPEEDUP:g} for a forward pass without gradients"
        )


# --------------------------------------------------------------------------- the plan


@dataclass
class TransferPlan:
    """One transfer dataset of a job: the probe and the encoder forward passes it costs."""

    dataset: str
    epochs: int
    mode: str
    train_examples: int | None
    test_examples: int | None
    examples_source: str
    forward_samples: int | None
    gpu_hours: float | None


@dataclass
class JobPlan:
    """One job of the sweep."""

    overrides: list[str]
    domain: str
    algorithm: str
    seed: int
    gpus: int
    precision: str
    pretrain_steps: int
    pretrain_batch: int
    pretrain_samples: int
    transfers: list[TransferPlan]
    pretrain_gpu_hours: float
    transfer_gpu_hours: float
    transfer_unknown: list[str]
    compile_gpu_hours: float
    gpu_hours: float
    pretrain_throughput: dict | None
    forward_throughput: dict
    notes: list[str]


def _mode_samples(
    train: int | None, test: int | None, mode: str, epochs: int, batch: int, drop_last: bool
) -> int | None:
    if train is None or test is None:
        return None
    if mode == "cached_features":  # features once; the head trains on them (no encoder passes)
        return train + test
    per_epoch = (train // batch) * batch if drop_last else train
    return epochs * (per_epoch + test)  # the test split is scored after every epoch


def compose_sweep(overrides: Sequence[str]) -> tuple[DictConfig, list[tuple[list[str], DictConfig]]]:
    """The multirun config of ``overrides`` and each job's overrides and config, as ``dabs-rq -m`` composes them."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf.errors import OmegaConfBaseException

    from dabs_rq.cli import check_group_choices
    from dabs_rq.paths import CONF_DIR
    from dabs_rq.sweep_check import sweep_jobs

    check_group_choices(list(overrides))
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            loader = GlobalHydra.instance().config_loader()
            config = loader.load_configuration("config", list(overrides), run_mode=RunMode.MULTIRUN)
            jobs = [(list(o), loader.load_sweep_config(config, list(o))) for o in sweep_jobs(config)]
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(str(err).strip().splitlines()[0]) from None
    return config, jobs


def plan_job(
    overrides: list[str], cfg: DictConfig, bench: Bench, memo: dict[str, Any] | None = None
) -> tuple[JobPlan, list[CacheItem]]:
    """One job's plan and the caches it reads (``memo``: dataset configs already loaded, by job settings)."""
    from omegaconf.errors import MissingMandatoryValue

    from dabs_rq.checks import check_settings, job_datasets, requires_pretraining

    memo = {} if memo is None else memo
    try:
        str(cfg.domain)
    except MissingMandatoryValue:
        raise UserError("domain is not set: give domain=<name> (or an experiment=... that sweeps domains)") from None
    check_settings(cfg)
    key = json.dumps(
        OmegaConf.to_container(OmegaConf.masked_copy(cfg, ["domain", "dataset_overrides", "extra_domain_dirs"])),
        sort_keys=True,
    )
    if key not in memo:  # the same datasets for every algorithm and seed of a domain
        memo[key] = job_datasets(cfg)
    domain, transfer_sets = memo[key]
    algorithm = str(cfg.hydra.runtime.choices.algorithm)
    notes = []
    devices, nodes = cfg.trainer.devices, cfg.trainer.num_nodes
    if isinstance(devices, int) and isinstance(nodes, int) and devices > 0:
        gpus = devices * nodes
    else:
        gpus = 1
        notes.append(f"trainer.devices={devices}: GPU count unknown, 1 assumed")
    if gpus > 1:
        notes.append(f"{gpus} GPUs: throughput per GPU assumed to scale linearly")
    precision = str(cfg.trainer.precision)
    if precision == "auto":
        precision = "bf16-mixed"  # what auto resolves to on a GPU with bf16
    compile_on = bool(cfg.model.get("compile", False))
    protocol = OmegaConf.select(cfg, "protocol.name")
    overridden = {
        str(name)
        for name, value in (
            OmegaConf.to_container(cfg.dataset_overrides) if cfg.get("dataset_overrides") else {}
        ).items()
        if isinstance(value, dict) and ("reader" in value or "reader_options" in value)
    }
    n_tokens = tokens(domain)

    pretrains = requires_pretraining(cfg)
    batch = int(cfg.pretrain.batch_size or domain.batch_size) * (gpus if cfg.batch_scope == "device" else 1)
    steps = int(cfg.pretrain.max_steps) if pretrains else 0
    samples = steps * batch
    pre = bench.pretrain(str(domain.name), algorithm, n_tokens, precision, compile_on, protocol) if pretrains else None
    pretrain_hours = samples / pre.samples_per_s / 3600 if pre else 0.0

    fwd = bench.forward(str(domain.name), n_tokens, precision, compile_on, protocol)
    model = {key: cfg.model.get(key) for key in DABS_ENCODER}
    if model != DABS_ENCODER:
        other = ", ".join(f"{k} {v}" for k, v in model.items() if v != DABS_ENCODER[k])
        for throughput in (pre, fwd):
            if throughput is not None and not throughput.measured:
                throughput.source += f" (timed for the DABS-size encoder; this job's differs: {other})"
    transfers, unknown = [], []
    caches = cache_items(domain, ["train"], domain.name in overridden) if pretrains else []
    for dataset in transfer_sets:
        counts = examples(dataset, dataset.name in overridden)
        tbatch = int(cfg.transfer.batch_size or dataset.batch_size)
        fsamples = _mode_samples(
            counts.train,
            counts.test,
            str(cfg.transfer.mode),
            int(cfg.transfer.epochs),
            tbatch,
            bool(cfg.transfer.drop_last),
        )
        hours = fsamples / fwd.samples_per_s / 3600 if fsamples is not None else None
        if hours is None:
            unknown.append(str(dataset.name))
        source = counts.source + (" (approx.)" if counts.approx else "")
        transfers.append(
            TransferPlan(
                str(dataset.name),
                int(cfg.transfer.epochs),
                str(cfg.transfer.mode),
                counts.train,
                counts.test,
                source,
                fsamples,
                hours,
            )
        )
        caches += cache_items(dataset, ["train", "test"], dataset.name in overridden)
    transfer_hours = sum(t.gpu_hours or 0.0 for t in transfers)
    if cfg.transfer.mode == "cached_features":
        notes.append(
            "transfer.mode=cached_features: one forward pass per example; the probe's epochs on the cached features are not counted"
        )
    compile_hours = 0.0
    if compile_on:
        stages = int(pretrains) + len(transfers)
        compile_hours = stages * COMPILE_ALLOWANCE_S * gpus / 3600
        notes.append(
            f"model.compile on: GPU-h total includes {stages} x {COMPILE_ALLOWANCE_S:g} s of compilation per job "
            f"({ASSUMED}: dabs_rq.plan.COMPILE_ALLOWANCE_S)"
        )
    job = JobPlan(
        overrides=overrides,
        domain=str(domain.name),
        algorithm=algorithm,
        seed=int(cfg.seed),
        gpus=gpus,
        precision=precision,
        pretrain_steps=steps,
        pretrain_batch=batch if pretrains else 0,
        pretrain_samples=samples,
        transfers=transfers,
        pretrain_gpu_hours=pretrain_hours,
        transfer_gpu_hours=transfer_hours,
        transfer_unknown=unknown,
        compile_gpu_hours=compile_hours,
        gpu_hours=pretrain_hours + transfer_hours + compile_hours,
        pretrain_throughput={**asdict(pre), "label": pre.label} if pre else None,
        forward_throughput={**asdict(fwd), "label": fwd.label},
        notes=notes,
    )
    return job, caches


def make_plan(overrides: Sequence[str], bench: Bench) -> dict[str, Any]:
    """The plan of ``dabs-rq -m <overrides>`` as a JSON-ready dict (jobs, totals, caches, sources)."""
    _, composed = compose_sweep(overrides)
    jobs, caches, memo = [], {}, {}
    for job_overrides, cfg in composed:
        try:
            job, items = plan_job(job_overrides, cfg, bench, memo)
        except UserError as err:
            raise UserError(f"job {' '.join(job_overrides)}: {err}" if job_overrides else str(err)) from None
        jobs.append(job)
        for item in items:
            first = caches.setdefault(item.key, item)
            if first is not item and item.dataset != first.dataset and item.dataset not in first.shared_with:
                first.shared_with.append(item.dataset)
    swept = {}
    for job in jobs:
        for item in job.overrides:
            key, _, value = item.partition("=")
            swept.setdefault(key, {})[value] = None
    grid = {k: list(v) for k, v in swept.items() if len(v) > 1}
    items = list(caches.values())
    known = [i for i in items if i.bytes is not None]
    assumed = any(
        not j.forward_throughput["measured"] or (j.pretrain_throughput and not j.pretrain_throughput["measured"])
        for j in jobs
    ) or any(j.compile_gpu_hours for j in jobs)
    return {
        "command": "dabs-rq -m " + " ".join(overrides),
        "overrides": list(overrides),
        "grid": grid,
        "bench": {"card": bench.card, "files": bench.files(), "note": bench.note},
        "jobs": [asdict(j) for j in jobs],
        "totals": {
            "jobs": len(jobs),
            "pretrain_samples": sum(j.pretrain_samples for j in jobs),
            "pretrain_gpu_hours": sum(j.pretrain_gpu_hours for j in jobs),
            "transfer_gpu_hours": sum(j.transfer_gpu_hours for j in jobs),
            "compile_gpu_hours": sum(j.compile_gpu_hours for j in jobs),
            "gpu_hours": sum(j.gpu_hours for j in jobs),
            "gpu_hours_includes_assumptions": assumed,
            "transfer_unknown": sorted({d for j in jobs for d in j.transfer_unknown}),
        },
        "caches": [{k: v for k, v in asdict(i).items() if k != "key"} for i in items],
        "cache_bytes": {
            "known": sum(i.bytes for i in known),
            "stated": sum(i.bytes for i in known if i.status == "stated"),
            "unknown": sorted({f"{i.dataset} ({i.split})" for i in items if i.bytes is None}),
        },
    }


# --------------------------------------------------------------------------- output


def _size(n: int | None) -> str:
    if n is None:
        return "unknown"
    if n >= 1e9:
        return f"{n / 1e9:,.1f} GB"
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 or n == 0 else "<1 MB"


def _num(n: int | None) -> str:
    return "unknown" if n is None else f"{n:,}"


def render(plan: dict[str, Any]) -> str:
    """The plan as text: the job grid, per-job steps/samples/GPU-hours, throughputs, transfers, totals, cache disk."""
    jobs, totals = plan["jobs"], plan["totals"]
    lines = [f"Plan of: {plan['command']}  (nothing launched)"]
    grid = " x ".join(f"{k} ({len(v)})" for k, v in plan["grid"].items())
    count = f"{totals['jobs']} job{'s' if totals['jobs'] != 1 else ''}"
    lines.append(count + (f": {grid}" if grid else ""))
    bench = plan["bench"]
    if bench["files"]:
        lines.append(f"Benchmarks used: {', '.join(bench['files'])} (card: {bench['card']})")
    else:
        lines.append(f"Benchmarks used: none ({bench['note']}); every throughput below is {ASSUMED}")
    lines.append("")

    def mark(throughput: dict | None) -> str:
        return "" if throughput is None or throughput["measured"] else "*"

    header = ("job", "GPUs", "pretrain steps", "batch", "samples", "transfers", "GPU-h pretrain", "GPU-h transfer")
    rows = [(*header, "GPU-h total")]
    for job in jobs:
        pre = job["pretrain_throughput"]
        unknown = bool(job["transfer_unknown"])
        rows.append(
            (
                f"{job['domain']}/{job['algorithm']}/seed{job['seed']}",
                str(job["gpus"]),
                _num(job["pretrain_steps"]) if pre else "none",
                str(job["pretrain_batch"]) if pre else "-",
                _num(job["pretrain_samples"]) if pre else "-",
                str(len(job["transfers"])),
                f"{job['pretrain_gpu_hours']:.2f}{mark(pre)}" if pre else "0",
                f"{'>= ' if unknown else ''}{job['transfer_gpu_hours']:.2f}{mark(job['forward_throughput'])}",
                f"{'>= ' if unknown else ''}{job['gpu_hours']:.2f}",
            )
        )
    lines += _table(rows)
    lines.append(f"* from a throughput {ASSUMED} (below); >= : a transfer set of unknown size is not counted")
    lines += [f"note: {n}" for n in sorted({n for j in jobs for n in j["notes"]})]

    lines += ["", "Throughput per GPU (samples/s):"]
    rows, seen = [("domain", "stage", "samples/s", "status", "source")], set()
    for job in jobs:
        for stage, t in (
            (f"pretrain {job['algorithm']}", job["pretrain_throughput"]),
            ("transfer forward", job["forward_throughput"]),
        ):
            if t is not None and (job["domain"], stage) not in seen:
                seen.add((job["domain"], stage))
                rows.append((job["domain"], stage, f"{t['samples_per_s']:,.0f}", t["label"], t["source"]))
    lines += ["  " + line for line in _table(rows, right=(2,))]

    lines += ["", "Transfer datasets (linear probe on the frozen encoder; forward samples = encoder passes it costs):"]
    groups: dict[str, list[dict]] = {}
    for job in jobs:
        groups.setdefault(json.dumps([job["domain"], job["transfers"]], sort_keys=True, default=str), []).append(job)
    for same in groups.values():
        lines.append(f"  {same[0]['domain']} ({len(same)} job{'s' if len(same) != 1 else ''}):")
        for t in same[0]["transfers"]:
            lines.append(
                f"    {t['dataset']:<24} {t['mode']}, {t['epochs']} epochs; train {_num(t['train_examples'])} / "
                f"test {_num(t['test_examples'])} examples ({t['examples_source']}); "
                f"forward samples {_num(t['forward_samples'])}"
            )

    lines += ["", "Data caches (cache_dir; built once per dataset split, shared by every job):"]
    rows = [("dataset", "split", "size", "status", "how")]
    for i in plan["caches"]:
        shared = f"; the same cache as {', '.join(i['shared_with'])}" if i["shared_with"] else ""
        rows.append((i["dataset"], i["split"], _size(i["bytes"]), i["status"], i["how"] + shared))
    lines += ["  " + line for line in _table(rows, right=(2,))]
    cache = plan["cache_bytes"]
    stated = f", of which {_size(cache['stated'])} as stated in the YAMLs, not computed" if cache["stated"] else ""
    unknown = f"; unknown: {', '.join(cache['unknown'])}" if cache["unknown"] else ""
    lines.append(f"  total {_size(cache['known'])}{stated}{unknown}")

    lines += ["", f"Total: {count}, {_num(totals['pretrain_samples'])} pretraining samples"]
    total = (
        f"  {totals['gpu_hours']:.1f} GPU-hours = pretrain {totals['pretrain_gpu_hours']:.1f} + transfer "
        f"{totals['transfer_gpu_hours']:.1f} + compile {totals['compile_gpu_hours']:.1f}"
    )
    if totals["transfer_unknown"]:
        total += f", plus the transfers of unknown size ({', '.join(totals['transfer_unknown'])})"
    lines.append(total)
    if totals["gpu_hours_includes_assumptions"]:
        lines.append(f"  (rests on throughputs {ASSUMED}: see Throughput per GPU)")
    elif jobs:
        lines.append("  (every throughput used was measured)")
    return "\n".join(lines) + "\n"


def _table(rows: list[tuple[str, ...]], right: Sequence[int] | None = None) -> list[str]:
    """Rows as aligned text columns (the first left-aligned, the others right-aligned unless ``right`` names them)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    last = len(widths) - 1

    def cell(i: int, text: str) -> str:
        aligned = i in right if right is not None else i > 0
        if aligned:
            return text.rjust(widths[i])
        return text if i == last else text.ljust(widths[i])

    return ["  ".join(cell(i, c) for i, c in enumerate(r)).rstrip() for r in rows]


def main(argv: list[str]) -> int:
    """``dabs-rq plan``: print the plan of a sweep (and write it as JSON with ``--json``); exit 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="dabs-rq plan",
        description="What a sweep would run and cost (jobs, steps, samples, GPU-hours, cache disk); launches nothing.",
    )
    parser.add_argument("overrides", nargs="*", help="the sweep's Hydra overrides, e.g. experiment=paper protocol=dabs")
    parser.add_argument(
        "-m",
        "--multirun",
        action="store_true",
        help="accepted for symmetry with dabs-rq -m (a plan is always of the multirun)",
    )
    parser.add_argument("--card", default=None, help="GPU whose benchmarks to use (a part of its name, e.g. H100)")
    parser.add_argument("--bench", type=Path, default=None, help="use this benchmark JSON only")
    parser.add_argument(
        "--bench-dir", type=Path, default=BENCH_DIR, help=f"where benchmark JSONs are (default: {BENCH_DIR})"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the plan as JSON to this file")
    args = parser.parse_intermixed_args(argv)  # options may come between the overrides
    try:
        bench = Bench.find(args.bench_dir, args.card, args.bench)
        plan = make_plan(args.overrides, bench)
    except UserError as err:
        print(f"dabs-rq plan: error: {err}", file=sys.stderr)
        return 2
    print(render(plan), end="")
    if args.json is not None:
        from dabs_rq.io import write_json_atomic

        write_json_atomic(args.json, plan)
        print(f"Plan written to {args.json}")
    return 0
