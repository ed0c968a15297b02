"""Samples per second the real DABS data pipeline hands the training loop, on this machine's CPU cores.

Writes the two DABS pretraining sets in their real on-disk formats into a temporary folder --
an ImageNet-style ``train/<wnid>/*.JPEG`` folder of photo-sized JPEGs (500x375 and the other
common ImageNet shapes, about 100 KB each) and a LibriSpeech-style
``LibriSpeech/<subset>/<speaker>/<chapter>/*.flac`` tree of utterances of LibriSpeech's lengths
(about 13 s on average, most longer than the 150,526-sample window) -- then builds the real
:class:`~dabs_rq.data.datamodule.DomainDataModule` of ``domains/imagenet.yaml`` and
``domains/librispeech.yaml`` (the DABS batch of 64, drop_last) and iterates its pretraining
loader with ``workers`` loader processes: epoch 0 is the warm-up (workers start, caches page in),
the later whole epochs are timed. Both readers cache their preprocessed samples on first use
(uint8 224x224 images, float16 log-mel spectrograms); building that cache is the first epoch's
extra cost and is timed on its own (``stage = cache build``). ImageNet also runs in the reader's
``memmap: false`` mode (JPEG decode + resize in the loader workers on every epoch), which its
YAML suggests for the ~200 GB cache.

Target: an ``rq`` pretraining step at >= 3,000 samples/s on one H100 with data wait < 5 % needs
a pipeline that delivers >= 3,000 / 0.95 ~= 3,158 samples/s from its loader workers, which run
beside the step. With no workers (``workers = 0``) the step's own process loads every batch, so
all of the loading is data wait and 5 % of a step at 3,000 samples/s needs >= 60,000 samples/s.
Each loader row says whether this machine's cores meet its target, the rate per worker and per
core (``samples/s / min(workers or 1, CPUs)``), and how many such cores would deliver 3,158
samples/s (a linear extrapolation over CPU cores; nothing here measures a GPU).

Every sample is counted: the reader must list every file written, and every epoch must
deliver every example of the dataset except the ``len % 64`` that ``drop_last`` leaves out;
anything else stops the benchmark.
"""

from __future__ import annotations

import gc
import math
import os
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from dabs_rq.cores import usable_cores
from dabs_rq.data import domains
from dabs_rq.data.datamodule import DomainDataModule

TITLE = "Data pipeline throughput (real DABS formats)"
GPU_STEP_SAMPLES_PER_S = 3000.0  # the target: an rq pretraining step on one H100
DATA_WAIT_SHARE = 0.05  # ... with data wait under 5 % of the step
TARGET_SAMPLES_PER_S = GPU_STEP_SAMPLES_PER_S / (1 - DATA_WAIT_SHARE)  # 3,158
#: without loader workers the step's own process loads each batch, so all of it is data wait: < 5 % of a step
SERIAL_TARGET_SAMPLES_PER_S = GPU_STEP_SAMPLES_PER_S / DATA_WAIT_SHARE  # 60,000
STEP_BATCH = 64
#: the real training splits, for the full-set estimate of a cache build
FULL_SET = {"imagenet": 1_281_167, "librispeech": 281_241}
#: ImageNet's common photo shapes (width, height)
PHOTO_SIZES = ((500, 375), (500, 333), (375, 500), (500, 400), (400, 500), (500, 500))
SAMPLE_RATE = 16_000
#: every row has every column, in this order (None where one does not apply to a stage)
COLUMNS = (
    "domain",
    "mode",
    "stage",
    "workers",
    "batch",
    "files",
    "per epoch",
    "epochs",
    "samples",
    "seconds",
    "warm-up s",
    "samples/s",
    "batches/s",
    f"steps/s @{STEP_BATCH}",
    "samples/s per worker",
    "samples/s per core",
    "cores for 3,158/s",
    "target",
    "met",
    "full set h",
    "load 1 min",
)


# --------------------------------------------------------------------------- fixtures in the real formats


def photo(seed: int, size: tuple[int, int]) -> Image.Image:
    """A reproducible photo-like RGB image of ``size`` (width, height): smooth colour regions, mid-scale
    texture and sensor noise, so that its JPEG is about as large (and as slow to decode) as an ImageNet photo."""
    rng = np.random.default_rng(seed)
    w, h = size
    low = Image.fromarray(rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    mid = Image.fromarray(rng.integers(0, 256, size=(h // 8, w // 8, 3), dtype=np.uint8)).resize(size, Image.BILINEAR)
    pixels = 0.6 * np.asarray(low, dtype=np.float32) + 0.4 * np.asarray(mid, dtype=np.float32)
    pixels += rng.normal(0, 14, size=(h, w, 1)).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_imagenet(folder: Path, n_train: int, n_val: int, classes: int = 10, seed: int = 0) -> dict:
    """``train/<wnid>/<wnid>_<k>.JPEG`` and ``val/<wnid>/ILSVRC2012_val_<id>.JPEG`` (quality 90, 4:2:0 chroma, as
    ImageNet's camera JPEGs mostly are) in ``folder``; returns ``{"train": n_train, "test": n_val, "bytes": ...}``."""
    wnids = [f"n{1440764 + 17 * c:08d}" for c in range(classes)]
    jobs = []
    for i in range(n_train):
        wnid = wnids[i % classes]
        jobs.append((folder / "train" / wnid / f"{wnid}_{i}.JPEG", seed + i))
    for i in range(n_val):
        jobs.append((folder / "val" / wnids[i % classes] / f"ILSVRC2012_val_{i + 1:08d}.JPEG", seed + n_train + i))
    for path, _ in jobs:
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(job: tuple[Path, int]) -> int:
        path, s = job
        photo(s, PHOTO_SIZES[s % len(PHOTO_SIZES)]).save(path, "JPEG", quality=90)
        return path.stat().st_size

    with ThreadPoolExecutor(usable_cores()) as pool:
        sizes = list(pool.map(write, jobs))
    return {"train": n_train, "test": n_val, "bytes": int(sum(sizes))}


def utterance_lengths(count: int, seed: int) -> np.ndarray:
    """Clip lengths in samples drawn like LibriSpeech's training utterances (mean ~12.7 s, 1.5-24.5 s here)."""
    seconds = np.clip(np.random.default_rng(seed).normal(12.7, 3.5, count), 1.5, 24.5)
    return (seconds * SAMPLE_RATE).astype(np.int64)


def write_librispeech(folder: Path, n_train: int, n_dev: int, seed: int = 0, per_chapter: int = 20) -> dict:
    """``LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` (16 kHz int16 FLAC, written by the
    speech tests' :func:`~tests.speech_fixtures.write_clip`) with ``<speaker>-<chapter>.trans.txt``, the training
    clips spread over the three 960 h subsets in their proportions (100 : 360 : 500 h), ``n_dev`` in dev-clean."""
    from tests.speech_fixtures import write_clip

    base = folder / "LibriSpeech"
    lengths = utterance_lengths(n_train + n_dev, seed)
    shares = np.array([100, 360, 500]) / 960
    counts = np.floor(shares * n_train).astype(int)
    counts[-1] += n_train - counts.sum()
    subsets = [("train-clean-100", counts[0]), ("train-clean-360", counts[1]), ("train-other-500", counts[2])]
    subsets.append(("dev-clean", n_dev))
    jobs, transcripts = [], {}
    clip = 0
    for s, (subset, count) in enumerate(subsets):
        for k in range(count):
            speaker, chapter = 1000 * (s + 1) + k // per_chapter, 100 + s
            fileid = f"{speaker}-{chapter}-{k % per_chapter:04d}"
            chapter_dir = base / subset / str(speaker) / str(chapter)
            jobs.append((chapter_dir / f"{fileid}.flac", seed + clip, int(lengths[clip])))
            transcripts.setdefault(chapter_dir / f"{speaker}-{chapter}.trans.txt", []).append(f"{fileid} WORDS {k}")
            clip += 1
    for path, lines in transcripts.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    with ThreadPoolExecutor(usable_cores()) as pool:
        list(pool.map(lambda job: write_clip(job[0], seed=job[1], samples=job[2]), jobs))
    window = 150_526
    return {
        "train": n_train,
        "test": n_dev,
        "bytes": int(sum(p.stat().st_size for p, _, _ in jobs)),
        "long": int((lengths[:n_train] > window).sum()),
    }


# --------------------------------------------------------------------------- measurements


def _datamodule(name: str, root: Path, cache: Path, workers: int | None, memmap: bool = True) -> DomainDataModule:
    cfg = domains.load(name)
    if not memmap:
        cfg.reader.memmap = False
    return DomainDataModule(cfg, cache, num_workers=workers, data_root=root)


def _row(**fields) -> dict:
    unknown = set(fields) - set(COLUMNS)
    if unknown:
        raise KeyError(f"not a column: {sorted(unknown)}")
    return {column: fields.get(column) for column in COLUMNS}


def _load() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


def cache_build(name: str, root: Path, cache: Path, files: int) -> dict:
    """The first epoch's extra cost: the reader lists the files and preprocesses every one into its cache."""
    load = _load()
    start = time.perf_counter()
    dataset = _datamodule(name, root, cache, workers=0).split("train")
    seconds = time.perf_counter() - start
    if len(dataset) != files:
        raise RuntimeError(f"{name}: the reader listed {len(dataset)} of the {files} training files written")
    rate = files / seconds
    return _row(
        domain=name,
        mode="memmap cache",
        stage="cache build (first epoch, once)",
        workers=usable_cores(),  # the readers build their caches on a thread per CPU
        files=files,
        samples=files,
        seconds=round(seconds, 2),
        **{"samples/s": round(rate), "full set h": round(FULL_SET[name] / rate / 3600, 1), "load 1 min": load},
    )


def _consume(batch, shape: tuple[int, ...]) -> int:
    """The number of samples in a batch, checked: as many inputs as labels, each of the domain's shape."""
    (x,), y = batch
    if x.shape[0] != y.shape[0] or tuple(x.shape[1:]) != shape:
        raise RuntimeError(f"a batch of inputs {list(x.shape)} and labels {list(y.shape)}; expected [*, {shape}]")
    return int(x.shape[0])


def counted_epoch(loader, epoch: int, shape: tuple[int, ...], expected: int, name: str) -> int:
    """Iterate one epoch of ``loader`` as training does (``set_epoch``: a new order), counting its samples; an
    epoch that delivers other than ``expected`` samples stops the benchmark."""
    loader.sampler.set_epoch(epoch)
    counted = sum(_consume(batch, shape) for batch in loader)
    if counted != expected:
        raise RuntimeError(f"{name}: epoch {epoch} delivered {counted} samples, expected {expected}")
    return counted


def loader_rate(
    name: str, root: Path, cache: Path, files: int, workers: int, min_seconds: float, memmap: bool = True
) -> dict:
    """Samples/s of the pretraining loader after a warm-up epoch, over whole timed epochs (at least one,
    until ``min_seconds`` have passed), every epoch's samples counted."""
    dm = _datamodule(name, root, cache, workers, memmap)
    dataset = dm.split("train")
    if len(dataset) != files:
        raise RuntimeError(f"{name}: the reader listed {len(dataset)} of the {files} training files written")
    batch = dm.batch_size
    per_epoch = len(dataset) - len(dataset) % batch  # drop_last: the pretraining loader's fixed batch
    shape = tuple(dataset[0][0][0].shape)

    load = _load()
    with warnings.catch_warnings():
        # the configured 4 workers exceed a 2-core machine's CPUs on purpose: the config is what is measured
        warnings.filterwarnings("ignore", "This DataLoader will create", UserWarning)
        loader = dm.pretrain_dataloader()
        warmup_start = time.perf_counter()
        counted_epoch(loader, 0, shape, per_epoch, name)
        warmup = time.perf_counter() - warmup_start
        samples, epochs, start = 0, 0, time.perf_counter()
        while epochs == 0 or time.perf_counter() - start < min_seconds:
            epochs += 1
            samples += counted_epoch(loader, epochs, shape, per_epoch, name)
        seconds = time.perf_counter() - start
    del loader, dm  # shuts the persistent workers down
    gc.collect()
    rate = samples / seconds
    per_core = rate / min(max(workers, 1), usable_cores())
    target = TARGET_SAMPLES_PER_S if workers else SERIAL_TARGET_SAMPLES_PER_S
    return _row(
        domain=name,
        mode="memmap cache" if memmap else "decode on the fly",
        stage="loader (after a warm-up epoch)",
        workers=workers,
        batch=batch,
        files=files,
        epochs=epochs,
        samples=samples,
        seconds=round(seconds, 2),
        **{
            "per epoch": per_epoch,
            "warm-up s": round(warmup, 2),
            "samples/s": round(rate),
            "batches/s": round(rate / batch, 2),
            f"steps/s @{STEP_BATCH}": round(rate / STEP_BATCH, 2),
            "samples/s per worker": round(rate / max(workers, 1)),
            "samples/s per core": round(per_core),
            "cores for 3,158/s": math.ceil(TARGET_SAMPLES_PER_S / per_core),
            "target": f">= {target:,.0f} samples/s" + ("" if workers else " (loads in the step's process)"),
            "met": bool(rate >= target),
            "load 1 min": load,
        },
    )


def measure(
    root: Path,
    image_train: int,
    speech_train: int,
    worker_counts: tuple[int, ...],
    min_seconds: float,
) -> list[dict]:
    """Every row: write the fixtures under ``root``, build each cache once, then time each loader setting."""
    data, rows = root / "data", []
    written = {
        "imagenet": write_imagenet(data / "imagenet", image_train, n_val=20),
        "librispeech": write_librispeech(data / "librispeech", speech_train, n_dev=10),
    }
    for name, info in written.items():
        print(f"[data_pipeline] {name}: {info['train']} training files, {info['bytes'] / 1e6:.0f} MB", flush=True)
        cache = root / f"cache-{name}"
        rows.append(cache_build(name, data, cache, info["train"]))
        configured = int(domains.load(name).get("num_workers", 0))
        for workers in sorted({*worker_counts, configured}):
            rows.append(loader_rate(name, data, cache, info["train"], workers, min_seconds))
        if name == "imagenet":  # the reader's no-cache mode: JPEG decode + resize in the workers, every epoch
            for workers in sorted({*worker_counts, configured}):
                rows.append(loader_rate(name, data, cache, info["train"], workers, min_seconds, memmap=False))
    return rows


def run(device: str = "cpu", quick: bool = False) -> list[dict]:
    """The loaders are CPU work; on a CUDA machine they pin memory, as in training (``device`` names the file)."""
    with tempfile.TemporaryDirectory(prefix="dabs_rq_data_pipeline_") as tmp:
        if quick:  # two batches and a remainder per set: every code path, a few seconds
            return measure(Path(tmp), 2 * 64 + 5, 2 * 64 + 3, worker_counts=(0,), min_seconds=0)
        return measure(Path(tmp), 24 * 64 + 17, 10 * 64 + 9, worker_counts=(0, 1, 2), min_seconds=10)
