"""Generic audio reader: audio files as normalised log-mel spectrograms (1-channel "images").

Minimal YAML (files under the YAML's folder; one class per subfolder, seeded 80/20 split)::

    reader:
      _target_: dabs_rq.data.generic.audio.audio_files
      audio_root: clips/           # clips/<class>/*.wav (.flac, .ogg, .aiff too; any depth below <class>)
      clip_seconds: 1.0            # the defaults: frames = round(1.0 * 16000) // 250 = 64
      sample_rate: 16000
      hop_length: 250
      n_mels: 64                   # image_size below: [n_mels, frames]
    inputs:
      - {_target_: dabs_rq.encoder.PatchEmbedding2d, image_size: [64, 64], patch_size: [16, 16], channels: 1}

Items are ``((float32 [1, n_mels, frames],), label)`` where::

    samples = round(clip_seconds * sample_rate)
    frames  = samples // hop_length

so ``PatchEmbedding2d.image_size`` is ``[n_mels, frames]`` (each divisible by its
``patch_size``). The defaults (16 kHz, 1 s, ``hop_length`` 250, ``n_mels`` 64, ``n_fft`` 1024)
give ``[1, 64, 64]``; e.g. ``hop_length: 160`` gives 100 frames, ``clip_seconds: 2`` 128.

Labels come from the class subfolders of ``audio_root`` (``label_type: class``, no ``table``;
classes sorted, or ``classes``; a file directly in ``audio_root`` has no class: see
``unlabelled`` below), or from a table
(``table``: CSV / TSV / JSONL / JSON / parquet) with one row per clip: ``path_column`` (a path
relative to ``audio_root``, by default the table's folder) and ``label_column`` (or
``label_columns``) as ``label_type`` (``class``, ``multilabel``, ``score``) needs.
``label_type: none`` (pretraining) reads every audio file under ``audio_root`` (or every row of
the table) and ignores labels. ``split_by: ratio`` splits clips with a seeded ``test_fraction``;
``column`` reads ``split_column`` of the table; ``files`` reads ``train`` and ``test``, each a
table (paths relative to ``audio_root``, else to that table's folder) or a folder of class
subfolders.

Each clip is decoded with ``soundfile`` (any sample rate; channels are averaged to mono),
resampled to ``sample_rate`` with ``torchaudio.functional.resample``, cut to its first
``clip_seconds`` or zero-padded at the end, and turned into a power mel spectrogram
(``torchaudio.transforms.MelSpectrogram``: ``n_fft`` = window length, Hann window,
``hop_length``, ``n_mels`` HTK mel bands from 0 Hz to ``sample_rate / 2``, centred frames
padded with zeros, of which it computes ``1 + samples // hop_length``; the last one is dropped
so that ``frames`` is as above). It is taken to dB,
``10 * log10(max(power, 1e-10))``, floored at 80 dB below the clip's loudest value (the shared
front end, :func:`dabs_rq.data.audio_features.log_mel`, with :meth:`AudioFiles.mel`), and
normalised with one ``mean`` and ``std`` (those of every train spectrogram value unless both
are given).

An audio file that cannot be decoded, decodes to fewer frames than its header promises, is a
WAV whose data chunk is cut short, is empty, holds non-finite samples or (for tables) does not
exist, stops the run with a :class:`~dabs_rq.data.storage.CorruptDataError` naming it, or with the
run's ``on_corrupt=skip`` is left out and counted in one log line. Labels and splits are assigned
before anything is skipped, so a skipped clip never moves another clip's label or split.

``unlabelled`` (``error`` by default, or ``skip``): a clip lying directly in ``audio_root`` (or
``train`` / ``test``) beside the class subfolders, or a table row whose label cell is empty
(``class``, ``score``, a 0/1 cell of ``label_columns``; an empty ``multilabel`` cell of names
means "no label applies" and is kept), stops the run in one line with the count, the first few
and the fix, or is left out and counted. A row whose ``split_column`` is neither
``train_value`` nor ``test_value`` is in no split. Every split Dataset carries ``excluded``
(``{reason: count}``, stored in the record; corrupt clips included) and logs one line when it
is not empty.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from dabs_rq.data.audio_features import MelSettings, fix_length, log_mel, resample
from dabs_rq.data.generic.spec import TABLE_SUFFIXES, ReaderSpec, ReaderSpecError, read_table
from dabs_rq.data.readers.speech import read_audio
from dabs_rq.data.storage import CORRUPT, CorruptDataError, CorruptLog, LeftOut

SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif")
#: dB floor of the power (``10 * log10(1e-10) = -100 dB``) and the per-clip dynamic range kept
AMIN, TOP_DB = 1e-10, 80.0
#: clips turned into spectrograms at once
CHUNK = 256
#: ``excluded`` reasons
LOOSE = "clips outside the class subfolders"
EMPTY_LABEL = "rows with an empty label"
CORRUPT_CLIPS = f"clips {CORRUPT}"


@dataclasses.dataclass
class AudioFiles(ReaderSpec):
    PATH_FIELDS: ClassVar[tuple[str, ...]] = ("audio_root", "table", "train", "test")
    TARGET: ClassVar[str] = "dabs_rq.data.generic.audio.audio_files"

    audio_root: str | None = None
    table: str | None = None
    train: str | None = None
    test: str | None = None
    path_column: str = "path"
    sample_rate: int = 16000
    clip_seconds: float = 1.0
    n_mels: int = 64
    n_fft: int = 1024
    hop_length: int = 250
    mean: float | None = None
    std: float | None = None

    # ------------------------------------------------------------------ shape and checks

    @property
    def samples(self) -> int:
        """Samples of a clip at ``sample_rate``."""
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        """Spectrogram frames: ``round(clip_seconds * sample_rate) // hop_length``."""
        return self.samples // self.hop_length

    @property
    def shape(self) -> tuple[int, int, int]:
        """Every item's input shape ``(1, n_mels, frames)``."""
        return 1, self.n_mels, self.frames

    def expected_inputs(self) -> list[dict]:
        return [{"image_size": [self.n_mels, self.frames], "channels": 1}]

    def check(self) -> None:
        super().check()
        for key in ("sample_rate", "n_mels", "n_fft", "hop_length"):
            if getattr(self, key) <= 0:
                raise ReaderSpecError(key, f"must be a positive integer, got {getattr(self, key)}")
        if not self.clip_seconds > 0:
            raise ReaderSpecError("clip_seconds", f"must be positive, got {self.clip_seconds}")
        if self.frames < 1:
            raise ReaderSpecError(
                "hop_length",
                f"must be at most clip_seconds * sample_rate = {self.samples} "
                f"(frames = samples // hop_length), got {self.hop_length}",
            )
        if self.n_mels > self.n_fft // 2 + 1:
            raise ReaderSpecError(
                "n_mels",
                f"must be at most n_fft // 2 + 1 = {self.n_fft // 2 + 1} (the STFT's "
                f"frequency bins; raise n_fft), got {self.n_mels}",
            )
        if (self.mean is None) != (self.std is None):
            raise ReaderSpecError(
                "std" if self.std is None else "mean",
                "is needed too: give both mean and std, or neither (train statistics)",
            )
        if self.std is not None and not self.std > 0:
            raise ReaderSpecError("std", f"must be positive, got {self.std}")
        if self.audio_root is not None and not Path(self.audio_root).is_dir():
            raise ReaderSpecError("audio_root", f"must be a folder, {self.audio_root} is a file")
        if self.split_by == "files":
            for key in ("train", "test"):
                self._check_source(
                    key, self.require(key, "with split_by: files (a table or a folder of class subfolders)")
                )
            if Path(self.train).is_file() != Path(self.test).is_file():
                raise ReaderSpecError("test", "must be a table like train, or both folders")
        elif self.table is not None:
            if not Path(self.table).is_file():
                raise ReaderSpecError(
                    "table", f"must be a table file ({', '.join(TABLE_SUFFIXES)}), {self.table} is a folder"
                )
            self._check_source("table", self.table)
        else:
            if self.split_by == "column":
                raise ReaderSpecError(
                    "table", "is needed with split_by: column (its split_column holds each clip's split)"
                )
            self._check_source(
                "audio_root",
                self.require("audio_root", "(a folder of <class>/ subfolders of audio files, or set table)"),
            )

    def _check_source(self, key: str, source: str) -> None:
        """A table (its columns) or a folder (of class subfolders, for class labels)."""
        path = Path(source)
        if path.is_file():
            if path.suffix.lower() not in TABLE_SUFFIXES:
                raise ReaderSpecError(key, f"must be a folder or a table ({', '.join(TABLE_SUFFIXES)}), got {path}")
            needs = [("path_column", self.path_column)] + self.label_needs()
            self.check_columns(str(path), self.table_header(key, path), needs)
            return
        if self.label_type in ("multilabel", "score"):
            raise ReaderSpecError(
                "table" if key == "audio_root" else key,
                f"must be a table with label_type: {self.label_type} (folders give classes)",
            )
        if self.split_by == "column":
            raise ReaderSpecError(key, "must be a table with split_by: column, got a folder")
        if self.label_type == "class" and not any(p.is_dir() for p in path.iterdir()):
            raise ReaderSpecError(
                key, f"folder {path} has no class subfolders (<class>/*.wav; or set label_type: none, or a table)"
            )

    # ------------------------------------------------------------------ what to read

    def _folder_items(self, folder: Path, key: str = "audio_root") -> tuple[list[Path], list[str]]:
        """Audio files at any depth under ``folder`` and their class (first subfolder); '' without class
        labels, and for a file directly in ``folder`` (no class: ``unlabelled``)."""
        files = sorted(
            Path(where) / name
            for where, _, found in os.walk(folder, followlinks=True)
            for name in found
            if Path(name).suffix.lower() in SUFFIXES
        )
        if self.label_type == "none":
            names = [""] * len(files)
        else:
            names = [parts[0] if len(parts) > 1 else "" for parts in (f.relative_to(folder).parts for f in files)]
        if not files or not any(names) and self.label_type != "none":
            raise ReaderSpecError(
                key,
                f"no {'/'.join(SUFFIXES)} files in {folder}"
                f"{'' if self.label_type == 'none' else ' (<class>/ subfolders)'}",
            )
        return files, names

    def _table_items(self, path: Path) -> tuple[list[Path], Any]:
        """The table's audio files (resolved) and the table."""
        table = read_table(path)
        base = Path(self.audio_root) if self.audio_root else path.parent
        files = [Path(os.path.expanduser(str(v))) for v in table[self.path_column]]
        files = [f if f.is_absolute() else base / f for f in files]
        return files, table

    def _items(self) -> tuple[dict[str, list[Path]], dict[str, torch.Tensor], str, dict[str, LeftOut]]:
        """Per split: the audio files and their labels (assigned over both splits), a name for logs, and
        what the split leaves out (no label, no split) before decoding."""
        import pandas as pd

        def read(key: str, source: str) -> tuple[list[Path], Any, ReaderSpec, str, str]:
            """A table's or a folder's files and labels, and the reason and wording of a missing label."""
            if Path(source).is_file():
                files, table = self._table_items(Path(source))
                return files, table, self, EMPTY_LABEL, f"rows of {source} have an empty {self.label_column} cell"
            files, names = self._folder_items(Path(source), key)
            spec = dataclasses.replace(self, label_column="label", label_columns=None)
            what = f"clips lie outside the class subfolders of {source}"
            return files, pd.DataFrame({"label": names}), spec, LOOSE, what

        def labels(table: Any, spec: ReaderSpec) -> torch.Tensor:
            try:
                return spec.labels(table)
            except (ValueError, TypeError) as err:
                raise ReaderSpecError(
                    "classes" if self.classes else "label_column", " ".join(str(err).split())
                ) from None

        def refuse(files: list[Path], missing: np.ndarray, what: str) -> None:
            self.refuse_unlabelled(
                int(missing.sum()),
                what,
                [files[i].name for i in np.flatnonzero(missing)],
                "fill in their labels"
                if self.table or self.split_by == "files" and Path(self.train).is_file()
                else "move them into a class subfolder",
            )

        if self.split_by == "files":
            (train_files, train_table, spec, reason, what), (test_files, test_table, _, _, _) = (
                read("train", self.train),
                read("test", self.test),
            )
            both = pd.concat([train_table, test_table], ignore_index=True)
            y, missing = labels(both, spec), spec.missing_labels(both)
            refuse(train_files + test_files, missing, what)
            n = len(train_files)
            parts = {"train": (train_files, y[:n], missing[:n]), "test": (test_files, y[n:], missing[n:])}
            left = {split: LeftOut(Path(self.train).name, split) for split in parts}
            for split, (files, _, gone) in parts.items():
                left[split].add(reason, int(gone.sum()), [files[i].name for i in np.flatnonzero(gone)])
            return (
                {split: [f for f, g in zip(files, gone) if not g] for split, (files, _, gone) in parts.items()},
                {split: ys[torch.from_numpy(~gone)] for split, (_, ys, gone) in parts.items()},
                Path(self.train).name,
                left,
            )
        key = "table" if self.table else "audio_root"
        files, table, spec, reason, what = read(key, getattr(self, key))
        y, missing = labels(table, spec), spec.missing_labels(table)
        refuse(files, missing, what)
        values = table[self.split_column].tolist() if self.split_by == "column" else None
        name = Path(getattr(self, key)).name
        out_files, out_labels, left = {}, {}, {}
        for split in ("train", "test"):
            idx = self.split_rows(len(files), split, values)  # over every row: leaving one out moves none
            left[split] = LeftOut(name, split)
            left[split].add(reason, int(missing[idx].sum()), [files[i].name for i in idx[missing[idx]]])
            left[split].add(self.neither_reason("rows"), len(self.unsplit_rows(values)))
            idx = idx[~missing[idx]]
            out_files[split] = [files[i] for i in idx.tolist()]
            out_labels[split] = y[torch.as_tensor(idx, dtype=torch.long)]
        return out_files, out_labels, name, left

    def sources(self) -> list[Path]:
        """Every file the cached tensors depend on (tables and the audio files that exist)."""
        out = []
        for source in (self.train, self.test) if self.split_by == "files" else (self.table or self.audio_root,):
            path = Path(source)
            if path.is_file():
                out.append(path)
                out += [f for f in self._table_items(path)[0] if f.is_file()]
            else:
                out += self._folder_items(path)[0]
        return sorted(set(out))

    # ------------------------------------------------------------------ decoding and features

    def _wave(self, path: Path) -> np.ndarray:
        """``samples`` float32 samples of ``path`` at ``sample_rate`` (mono), or a CorruptDataError."""
        wave, rate = read_mono(path)
        return fix_length(resample(wave, rate, self.sample_rate), self.samples)

    def mel(self) -> MelSettings:
        """This reader's settings of the shared front end (HTK mel, zero-padded frames, dB with an 80 dB floor)."""
        return MelSettings(
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
            pad_mode="constant",
            frames=self.frames,
            amin=AMIN,
            top_db=TOP_DB,
        )

    def spectrograms(self, waves: torch.Tensor) -> torch.Tensor:
        """[B, samples] -> [B, 1, n_mels, frames] dB mel spectrograms (not normalised)."""
        return log_mel(waves, self.sample_rate, self.mel())

    def _split_x(self, files: list[Path], log: CorruptLog) -> tuple[torch.Tensor, list[int]]:
        """Spectrograms of the files that decode, and their positions in ``files``."""

        def decode(path: Path) -> np.ndarray | CorruptDataError:
            try:
                return self._wave(path)
            except CorruptDataError as err:
                return err

        out, kept = [], []
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # soundfile releases the GIL
            for start in range(0, len(files), CHUNK):
                waves = list(pool.map(decode, files[start : start + CHUNK]))
                good = []
                for i, wave in enumerate(waves, start=start):
                    if isinstance(wave, CorruptDataError):
                        log.add(wave)
                    else:
                        good.append(i)
                if good:
                    out.append(self.spectrograms(torch.from_numpy(np.stack([waves[i - start] for i in good]))))
                    kept += good
        x = torch.cat(out) if out else torch.zeros((0, *self.shape))
        return x, kept

    def build(self, on_corrupt: str) -> dict:
        files, labels, name, left = self._items()
        log = CorruptLog(name or "audio", "all", on_corrupt)
        out: dict = {}
        for split in ("train", "test"):
            x, kept = self._split_x(files[split], log)
            out[f"{split}_x0"], out[f"{split}_y"] = x, labels[split][torch.as_tensor(kept, dtype=torch.long)]
            left[split].add(CORRUPT_CLIPS, len(files[split]) - len(kept))
        log.report(kept=len(out["train_x0"]) + len(out["test_x0"]))
        for split in ("train", "test"):
            if not len(out[f"{split}_x0"]):
                why = f"; {left[split].line()}" if len(left[split]) else ""
                raise ReaderSpecError("split_by", f"the {split} split has no clips{why}")
        out["excluded"] = {split: left[split].state() for split in ("train", "test")}
        if self.mean is not None:
            mean, std = float(self.mean), float(self.std)
        else:
            mean, std = float(out["train_x0"].mean()), max(float(out["train_x0"].std()), 1e-6)
        for split in ("train", "test"):
            out[f"{split}_x0"] = ((out[f"{split}_x0"] - mean) / std).float().contiguous()
        return out

    def load(self, split: str, cache_dir: Path, on_corrupt: str = "error"):
        source = self.table or self.audio_root if self.split_by != "files" else self.train
        return self.cached(
            "audio",
            split,
            cache_dir,
            self.sources(),
            lambda: self.build(on_corrupt),
            on_corrupt,
            dataset=Path(source).name,
        )


def read_mono(path: Path) -> tuple[np.ndarray, int]:
    """An audio file as mono float32 (its channels averaged) and its sample rate; a missing or
    undecodable file is a :class:`CorruptDataError` naming it (see :func:`read_audio`)."""
    try:
        return read_audio(path, mono=True)
    except FileNotFoundError:
        raise CorruptDataError(path, "file not found") from None


def audio_files(split: str, cache_dir: Path, on_corrupt: str = "error", **settings):
    """Dataset of one split: ``((float32 [1, n_mels, frames],), label)`` (see the module docstring)."""
    return AudioFiles.from_mapping(settings).load(split, cache_dir, on_corrupt)
