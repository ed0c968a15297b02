"""Readers of the DABS speech datasets: LibriSpeech, VoxCeleb1, AudioMNIST, Speech Commands, Fluent Speech.

Every reader indexes its dataset (through ``torchaudio.datasets`` where one exists,
for the file lists and official splits only), decodes audio with ``soundfile`` and turns
each clip into DABS's log-mel "image":

1. native sample rate (no resampling; AudioMNIST stays at 48 kHz), channel 0;
2. fixed length of :data:`MAX_LENGTH` = 150,526 samples: a shorter clip is zero-padded at
   the end; a longer one keeps its first window (evaluation) or, in training, its first
   or its last window at random;
3. ``librosa.feature.melspectrogram(y, sr, hop_length=672, n_mels=224)`` with librosa's
   defaults (n_fft = win_length = 2048, periodic Hann, ``center=True``, power 2, Slaney
   mel scale and Slaney area normalisation, 0 Hz .. sr/2), computed with
   ``torchaudio.transforms.MelSpectrogram(norm="slaney", mel_scale="slaney")``. Padding
   of the centred frames is ``reflect`` (librosa < 0.10, the DABS 1.0 era; librosa
   >= 0.10 pads with zeros: ``pad_mode="constant"``), which only touches the edge frames;
4. ``librosa.power_to_db(S ** 2)`` (ref 1.0, amin 1e-10, top_db 80, the 80 dB floor taken
   per clip), computed with ``torchaudio.functional.amplitude_to_DB`` on a
   ``[B, 1, F, T]`` batch, whose per-example floor is exactly librosa's per-clip one.
   Squaring the power is DABS's quirk: ``power_to_db(S**2) == 2 * power_to_db(S,
   amin=1e-5, top_db=40)``, i.e. a 40 dB dynamic range on a doubled scale;
5. ``(x - mean) / std`` with the dataset's scalar constants -> float32 ``[1, 224, 224]``.

Steps 3 and 4 are the shared audio front end (:func:`dabs_rq.data.audio_features.log_mel`) with
DABS's settings (:meth:`FrontEnd.mel`).

The result matches librosa 0.11 (``pad_mode="reflect"``) to within 1e-3 dB.

Spectrograms are computed once per (resolved data folder, file list with each file's size and
mtime, split, settings; not labels, so the three Fluent tasks share one) and stored,
normalised, as float16 memory maps under ``cache_dir/speech``, with the clip lengths of the
training split. The training-time random window is kept exactly as in DABS by caching both
windows: the first window of every clip and, in a second array, the last window of every
clip longer than 150,526 samples; each access of a long training clip then draws first-or-last with a fresh coin
from torch's global generator, like DABS's ``random.getrandbits(1)`` in every ``__getitem__``. Through the
project's loaders each batch is fetched under a seed of (seed, epoch, batch) (``dabs_rq.data.tensor_dataset``),
so the coins depend on the position in the data order only: the same in every worker layout and in a
resumed run (DABS's coins were unseeded).

Every reader takes ``on_corrupt`` (``"error"`` | ``"skip"``). An audio file that libsndfile
cannot decode, that decodes to fewer frames than its header promises, whose WAV data chunk
is cut short (a truncated download), that is empty or holds non-finite samples, or a
malformed line of a split list (Fluent's CSVs, VoxCeleb's ``iden_split.txt``), either stops
the run with a :class:`CorruptDataError` naming the file (and line), or is left out of the
split, counted in one summary line per split. The spectrogram cache records which rows hold no
clip, so a zero row is never served. Labels are assigned before anything is skipped, so a
skipped clip never shifts another clip's label. Every split Dataset carries ``excluded``
(``{reason: count}``, stored in the record): the list lines and clips skipped as corrupt.
"""

from __future__ import annotations

import csv
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio
from torch import Tensor

from dabs_rq.data.array_cache import ArrayDataset, cache_key, checked_memmap_cache, own_memory, source_identity
from dabs_rq.data.audio_features import MelSettings, fix_length, log_mel, resample
from dabs_rq.data.splits import check_split
from dabs_rq.data.storage import CORRUPT, CorruptDataError, CorruptLog, LeftOut, download_and_extract

MAX_LENGTH = 150_526
N_MELS = 224
#: clips decoded and transformed together when a cache is built
CHUNK = 64

LIBRISPEECH_TRAIN = ("train-clean-100", "train-clean-360", "train-other-500")
AUDIO_MNIST_TRAIN_SPEAKERS = (
    28,
    56,
    7,
    19,
    35,
    1,
    6,
    16,
    23,
    34,
    46,
    53,
    36,
    57,
    9,
    24,
    37,
    2,
    8,
    17,
    29,
    39,
    48,
    54,
    43,
    58,
    14,
    25,
    38,
    3,
    10,
    20,
    30,
    40,
    49,
    55,
)
AUDIO_MNIST_VAL_SPEAKERS = (12, 47, 59, 15, 27, 41, 4, 11, 21, 31, 44, 50)
AUDIO_MNIST_TEST_SPEAKERS = (26, 52, 60, 18, 32, 42, 5, 13, 22, 33, 45, 51)
#: DABS's label order (index = class); 35 words + ``_background_noise_`` (36 outputs)
GSC_LABELS = (
    "eight",
    "right",
    "happy",
    "three",
    "yes",
    "up",
    "no",
    "stop",
    "on",
    "four",
    "nine",
    "zero",
    "down",
    "go",
    "six",
    "two",
    "left",
    "five",
    "off",
    "seven",
    "one",
    "cat",
    "bird",
    "marvin",
    "wow",
    "tree",
    "dog",
    "sheila",
    "bed",
    "house",
    "follow",
    "visual",
    "backward",
    "forward",
    "learn",
    "_background_noise_",
)
GSC_BACKGROUND = "_background_noise_"
#: The archives' published sha256 digests (torchaudio's tables), checked by :func:`download_and_extract`
SHA256 = {
    "http://www.openslr.org/resources/12/dev-clean.tar.gz": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "http://www.openslr.org/resources/12/dev-other.tar.gz": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "http://www.openslr.org/resources/12/test-clean.tar.gz": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "http://www.openslr.org/resources/12/test-other.tar.gz": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
    "http://www.openslr.org/resources/12/train-clean-100.tar.gz": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "http://www.openslr.org/resources/12/train-clean-360.tar.gz": "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf",
    "http://www.openslr.org/resources/12/train-other-500.tar.gz": "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2",
    "http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz": "743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d",
    "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz": "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
}
FLUENT_LABELS = {
    "action": ("change language", "activate", "deactivate", "increase", "decrease", "bring"),
    "object": (
        "none",
        "music",
        "lights",
        "volume",
        "heat",
        "lamp",
        "newspaper",
        "juice",
        "socks",
        "shoes",
        "Chinese",
        "Korean",
        "English",
        "German",
    ),
    "location": ("none", "kitchen", "bedroom", "washroom"),
}


# --------------------------------------------------------------------------- front-end


@dataclass(frozen=True)
class FrontEnd:
    """The DABS log-mel settings of one dataset (all of them are part of the cache key)."""

    mean: float
    std: float
    db_of_squared_power: bool = True
    resample_to: int | None = None
    pad_mode: str = "reflect"
    max_length: int = MAX_LENGTH
    n_fft: int = 2048
    hop_length: int = 672
    n_mels: int = N_MELS

    def scale(self) -> tuple[float, float]:
        """(mean, std) to normalise with: DABS's constants, halved for ``power_to_db(S)``.

        The DABS constants describe ``power_to_db(S**2)``, which is twice the dB value of
        ``S``; halving them keeps the normalised scale comparable (exact away from the floor).
        """
        if self.db_of_squared_power:
            return self.mean, self.std
        return self.mean / 2, self.std / 2

    def mel(self) -> MelSettings:
        """Steps 3 and 4 for the shared front end: librosa's default mel (Slaney scale and
        normalisation), power squared or not, dB floored 80 dB below each clip's maximum."""
        return MelSettings(
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
            pad_mode=self.pad_mode,
            mel_scale="slaney",
            norm="slaney",
            square_power=self.db_of_squared_power,
        )


def spectrograms(waves: Tensor, sample_rate: int, front_end: FrontEnd) -> Tensor:
    """[B, samples] waveforms -> [B, 1, n_mels, frames] normalised DABS log-mel spectrograms (float32)."""
    mean, std = front_end.scale()
    return (log_mel(waves, sample_rate, front_end.mel()) - mean) / std


def frames(front_end: FrontEnd) -> int:
    """Number of STFT frames of a fixed-length clip (224 for DABS's settings)."""
    return 1 + front_end.max_length // front_end.hop_length


def wav_truncation(path: Path) -> str | None:
    """Why a RIFF/WAVE file is truncated (its data chunk claims more bytes than the file holds), else None.

    libsndfile reads such a file without complaint, as a shorter clip; a few header bytes tell.
    Not a WAV file, or a streaming-style length (0 or 0xFFFFFFFF): None (libsndfile decides).
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size, position = os.fstat(f.fileno()).st_size, 12
        while position + 8 <= size:
            f.seek(position)
            chunk_id, length = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                held = size - position - 8
                if length not in (0, 0xFFFFFFFF) and length > held:
                    return f"truncated WAV: data chunk declares {length} bytes, the file holds {held}"
                return None
            position += 8 + length + (length & 1)
    return None


def read_audio(path: Path, mono: bool = False) -> tuple[np.ndarray, int]:
    """Channel 0 of an audio file (``mono``: the mean of its channels) as float32 in [-1, 1) and
    its native sample rate.

    Decoded completely or not at all: :class:`CorruptDataError` (naming the file) for a file
    libsndfile cannot decode, fewer frames than the header promises, a truncated WAV data
    chunk, no samples, or non-finite samples. A missing file is a ``FileNotFoundError``.
    """
    try:
        with sf.SoundFile(str(path)) as f:
            frames, rate = f.frames, f.samplerate
            data = f.read(dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError, EOFError) as err:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"audio file not found: {path}") from err
        raise CorruptDataError(path, f"cannot decode audio ({' '.join(str(err).split())})") from err
    problem = wav_truncation(path)
    if problem is None and len(data) != frames:
        problem = f"decoded {len(data)} of the {frames} frames its header promises"
    if problem is None and not len(data):
        problem = "no samples"
    if mono:
        data = data.mean(axis=1, keepdims=True, dtype=np.float32)
    if problem is None and not np.isfinite(data[:, 0]).all():
        problem = "non-finite samples"
    if problem is not None:
        raise CorruptDataError(path, problem)
    return data[:, 0], int(rate)


def _prepare(path: Path, front_end: FrontEnd) -> tuple[np.ndarray, int]:
    """Decoded clip, resampled only if the front-end asks for it (not DABS)."""
    wave, rate = read_audio(path)
    if front_end.resample_to:
        wave, rate = resample(wave, rate, front_end.resample_to), front_end.resample_to
    return wave, rate


Rows = tuple[np.ndarray, dict[int, CorruptDataError]]


def _or_error(function: Callable, *args) -> object:
    """``function(*args)``, or the :class:`CorruptDataError` it raised (so one bad file does not sink a chunk)."""
    try:
        return function(*args)
    except CorruptDataError as err:
        return err


def _spectrogram_batch(paths: Sequence[Path], front_end: FrontEnd, last: bool) -> Rows:
    """Normalised log-mels of ``paths`` (their first or last windows) as [B, 1, n_mels, frames] float16.

    With ``{position: error}`` of the files that did not decode (their rows are left zero).
    """
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # soundfile releases the GIL
        decoded = list(pool.map(lambda p: _or_error(_prepare, p, front_end), paths))
    errors = {i: d for i, d in enumerate(decoded) if isinstance(d, CorruptDataError)}
    out = np.zeros((len(paths), 1, front_end.n_mels, frames(front_end)), dtype=np.float16)
    good = [i for i in range(len(paths)) if i not in errors]
    for rate in sorted({decoded[i][1] for i in good}):
        rows = [i for i in good if decoded[i][1] == rate]
        waves = torch.from_numpy(np.stack([fix_length(decoded[i][0], front_end.max_length, last) for i in rows]))
        with torch.no_grad():
            out[rows] = spectrograms(waves, rate, front_end).numpy().astype(np.float16)
    return out, errors


def _chunked(build: Callable[[range], Rows], count: int, chunk: int = CHUNK) -> Callable[[int], np.ndarray]:
    """A row-by-row ``fill(i)`` for :func:`checked_memmap_cache` that computes ``chunk`` rows at a time.

    ``build`` returns the rows and ``{position: error}`` of those it could not compute;
    asking for such a row raises its :class:`CorruptDataError`.
    """
    held: dict[int, Rows] = {}

    def fill(i: int) -> np.ndarray:
        start = i - i % chunk
        if start not in held:
            held.clear()
            held[start] = build(range(start, min(start + chunk, count)))
        rows, errors = held[start]
        if i - start in errors:
            raise errors[i - start]
        return rows[i - start]

    return fill


def _clip_length(path: Path, front_end: FrontEnd) -> int:
    """Length in samples of one clip at the rate the front-end sees (a header read)."""
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, ValueError, EOFError) as err:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"audio file not found: {path}") from err
        raise CorruptDataError(path, f"cannot read the audio header ({' '.join(str(err).split())})") from err
    if front_end.resample_to and info.samplerate != front_end.resample_to:
        return int(np.ceil(info.frames * front_end.resample_to / info.samplerate))
    return int(info.frames)


def _lengths(paths: Sequence[Path | None], front_end: FrontEnd) -> Rows:
    """Clip lengths in samples at the rate the front-end sees (header reads only, unless resampling).

    ``None`` stands for a clip already known to be corrupt (length 0, not read).
    """

    def length(path: Path | None) -> object:
        return 0 if path is None else _or_error(_clip_length, path, front_end)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        found = list(pool.map(length, paths))
    errors = {i: x for i, x in enumerate(found) if isinstance(x, CorruptDataError)}
    return np.array([0 if i in errors else x for i, x in enumerate(found)], dtype=np.int64), errors


# --------------------------------------------------------------------------- dataset


class SpeechDataset(ArrayDataset):
    """Cached spectrograms ``(([1, 224, 224],), label)``; batch-indexable.

    With ``last`` (training), a clip longer than the window (``last_row[i] >= 0``) is read
    as its first or its last window with probability 1/2 each, drawn anew at every access.
    ``files`` lists the audio file of every example (for inspection). ``rows`` (default:
    example ``i`` is cache row ``i``) maps examples to rows of ``first`` / ``last_row`` when
    corrupt clips were left out; ``labels`` and ``files`` are per example.
    """

    def __init__(
        self,
        first: np.ndarray,
        labels: np.ndarray,
        files: Sequence[str],
        last: np.ndarray | None = None,
        last_row: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> None:
        if rows is None:
            super().__init__([first], labels)
        else:
            self.inputs, self.dtypes = [first], [torch.float32]
            self.labels = torch.as_tensor(np.asarray(labels))
            if len(rows) != len(self.labels):
                raise ValueError("rows needs one entry per label")
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.files = list(files)
        self.last, self.last_row = last, last_row

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | list[int]) -> tuple[tuple[Tensor, ...], Tensor]:
        if self.rows is None:
            (x,), y = super().__getitem__(index)
            row = index
        else:
            row = self.rows[index]
            x, y = torch.as_tensor(own_memory(self.inputs[0][row], self.inputs[0])).float(), self.labels[index]
        if self.last is None:
            return (x,), y
        rows = np.atleast_1d(self.last_row[row])
        flip = (rows >= 0) & (torch.rand(len(rows)) < 0.5).numpy()
        if flip.any():
            batch = x.view(-1, *x.shape[-3:])
            picked = torch.as_tensor(np.asarray(self.last[rows[flip]])).to(batch.dtype)
            batch[torch.from_numpy(np.flatnonzero(flip))] = picked
        return (x,), y


@dataclass(frozen=True)
class Clips:
    """One split of a dataset: audio files and integer labels, in a fixed order."""

    files: list[Path]
    labels: np.ndarray


def _cache_path(cache_dir: Path, name: str, split: str, window: str, source: str, front_end: FrontEnd) -> Path:
    """Cache file of one (files' ``source_identity``, window, front-end) combination; labels are not part of it."""
    key = cache_key(source=source, window=window, **asdict(front_end))
    return Path(cache_dir) / "speech" / f"{name}-{split}-{window}-{key}.npy"


def spectrogram_dataset(
    clips: Clips,
    split: str,
    cache_dir: Path,
    root: Path,
    name: str,
    front_end: FrontEnd,
    corrupt: CorruptLog | None = None,
) -> SpeechDataset:
    """The cached :class:`SpeechDataset` of ``clips`` (built on first use; random windows for ``train``).

    Corrupt clips go to the split's ``corrupt`` log (default: the first one stops the run);
    when it skips them they are left out of the dataset (their cache rows are recorded as
    empty, see :func:`checked_memmap_cache`) and the log reports its summary line.
    """
    check_split(split)
    if not clips.files:
        if corrupt is not None and len(corrupt):
            corrupt.report(kept=0)
        raise FileNotFoundError(f"{name} ({split}): no audio files found under {root}")
    corrupt = corrupt if corrupt is not None else CorruptLog(name, split)
    lines = len(corrupt)  # list lines already skipped
    shape = (1, front_end.n_mels, frames(front_end))
    count = len(clips.files)
    source = source_identity(root, files=clips.files)  # one stat per clip, shared by the three caches
    first, bad = checked_memmap_cache(
        _cache_path(cache_dir, name, split, "first", source, front_end),
        count,
        shape,
        np.float16,
        _chunked(lambda rows: _spectrogram_batch([clips.files[i] for i in rows], front_end, last=False), count),
        desc=f"{name} {split} spectrograms",
        skip_corrupt=corrupt.skip,
    )
    last = last_row = None
    if split == "train":
        lengths, bad_lengths = checked_memmap_cache(
            _cache_path(cache_dir, name, split, "lengths", source, front_end),
            count,
            (),
            np.int64,
            _chunked(
                lambda rows: _lengths([None if i in bad else clips.files[i] for i in rows], front_end),
                count,
                chunk=1024,
            ),
            desc=f"{name} {split} clip lengths",
            skip_corrupt=corrupt.skip,
        )
        bad = {**bad_lengths, **bad}
        long = np.array(
            [i for i in np.flatnonzero(np.asarray(lengths) > front_end.max_length) if i not in bad], dtype=np.int64
        )
        if len(long):
            last, bad_last = checked_memmap_cache(
                _cache_path(cache_dir, name, split, "last", source, front_end),
                len(long),
                shape,
                np.float16,
                _chunked(
                    lambda rows: _spectrogram_batch([clips.files[long[i]] for i in rows], front_end, last=True),
                    len(long),
                ),
                desc=f"{name} {split} last windows",
                skip_corrupt=corrupt.skip,
            )
            bad = {**{int(long[i]): e for i, e in bad_last.items()}, **bad}
            last_row = np.full(count, -1, dtype=np.int64)
            last_row[long] = np.arange(len(long))
    files = [str(f) for f in clips.files]
    if not bad:
        dataset = SpeechDataset(first, clips.labels, files, last=last, last_row=last_row)
    else:
        corrupt.extend(bad[i] for i in sorted(bad))
        rows = np.array([i for i in range(count) if i not in bad], dtype=np.int64)
        dataset = SpeechDataset(
            first, clips.labels[rows], [files[i] for i in rows], last=last, last_row=last_row, rows=rows
        )
    corrupt.report(kept=len(dataset))
    left = LeftOut(corrupt.dataset, split)
    left.add(f"list lines and clips {CORRUPT}", lines + count - len(dataset))
    return left.attach(dataset)


def _front_end(
    mean: float, std: float, db_of_squared_power: bool, pad_mode: str, resample_to: int | None = None
) -> FrontEnd:
    """The front-end of a reader's YAML arguments (cast: Hydra may hand over OmegaConf nodes)."""
    return FrontEnd(
        mean=float(mean),
        std=float(std),
        db_of_squared_power=bool(db_of_squared_power),
        pad_mode=str(pad_mode),
        resample_to=resample_to,
    )


def _index_map(values: Iterable) -> dict:
    """Class index of every distinct value, in sorted order (DABS's speaker-id mapping)."""
    return {v: i for i, v in enumerate(sorted(set(values)))}


# --------------------------------------------------------------------------- LibriSpeech


def _librispeech_subset(root: Path, subset: str, download: bool) -> tuple[list[Path], list[int]]:
    """Files and speaker ids of one LibriSpeech subset, in torchaudio's (sorted) walker order."""
    if download and not (Path(root) / "LibriSpeech" / subset).is_dir():
        url = f"http://www.openslr.org/resources/12/{subset}.tar.gz"
        download_and_extract(url, Path(root), sha256=SHA256.get(url))
    ds = torchaudio.datasets.LIBRISPEECH(root, url=subset, folder_in_archive="LibriSpeech", download=False)
    meta = [ds.get_metadata(n) for n in range(len(ds))]
    return [Path(root) / "LibriSpeech" / m[0] for m in meta], [int(m[3]) for m in meta]


def librispeech(
    split: str,
    cache_dir: Path,
    root: Path,
    mean: float,
    std: float,
    download: bool = False,
    train_subsets: Sequence[str] = LIBRISPEECH_TRAIN,
    test_subset: str = "dev-clean",
    db_of_squared_power: bool = True,
    pad_mode: str = "reflect",
    on_corrupt: str = "error",
) -> SpeechDataset:
    """LibriSpeech pretraining set: ``train`` = the 960 h subsets, ``test`` = dev-clean.

    Labels are speaker indices (sorted speaker ids of the split); pretraining ignores them.
    """
    corrupt = CorruptLog("librispeech", split, on_corrupt)
    subsets = list(train_subsets) if split == "train" else [test_subset]
    files, speakers = [], []
    for subset in subsets:
        f, s = _librispeech_subset(root, subset, download)
        files += f
        speakers += s
    index = _index_map(speakers)
    clips = Clips(files, np.array([index[s] for s in speakers], dtype=np.int64))
    front_end = _front_end(mean, std, db_of_squared_power, pad_mode)
    return spectrogram_dataset(clips, split, cache_dir, root, "librispeech", front_end, corrupt)


def per_speaker_split(
    speakers: Sequence[int], train_fraction: float = 0.8, seed: int = 42
) -> tuple[list[int], list[int]]:
    """DABS's LibriSpeech split: per speaker (sorted), shuffle its utterances with one RandomState, first 80% train."""
    rs = np.random.RandomState(seed)
    speakers = np.asarray(speakers)
    train, test = [], []
    for speaker in sorted(set(speakers.tolist())):
        rows = np.where(speakers == speaker)[0]
        rs.shuffle(rows)
        cut = int(train_fraction * len(rows))
        train += rows[:cut].tolist()
        test += rows[cut:].tolist()
    return train, test


def librispeech_speaker_id(
    split: str,
    cache_dir: Path,
    root: Path,
    mean: float,
    std: float,
    download: bool = False,
    subset: str = "dev-clean",
    train_fraction: float = 0.8,
    split_seed: int = 42,
    db_of_squared_power: bool = True,
    pad_mode: str = "reflect",
    on_corrupt: str = "error",
) -> SpeechDataset:
    """Speaker identification on dev-clean (40 speakers), DABS's per-speaker 80/20 split with RandomState(42)."""
    corrupt = CorruptLog("librispeech_speaker_id", split, on_corrupt)
    files, speakers = _librispeech_subset(root, subset, download)
    index = _index_map(speakers)
    train, test = per_speaker_split(speakers, train_fraction, split_seed)
    rows = train if split == "train" else test
    clips = Clips([files[i] for i in rows], np.array([index[speakers[i]] for i in rows], dtype=np.int64))
    front_end = _front_end(mean, std, db_of_squared_power, pad_mode)
    return spectrogram_dataset(clips, split, cache_dir, root, "librispeech_speaker_id", front_end, corrupt)


# --------------------------------------------------------------------------- VoxCeleb1


def voxceleb_lists(path: Path, corrupt: CorruptLog) -> dict[str, list[str]]:
    """``iden_split.txt`` as ``{"train" | "dev" | "test": sorted relative paths}`` (sets 1, 2, 3; torchaudio's order).

    A line that is not ``<1|2|3> <speaker>/<video>/<utterance>.wav`` goes to ``corrupt``.
    """
    lists: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
    sets = {"1": "train", "2": "dev", "3": "test"}
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise CorruptDataError(path, f"not UTF-8 text ({err})") from err
    for n, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[0] not in sets or len(Path(fields[1]).parts) != 3:
            corrupt.add(CorruptDataError(path, f"expected '<1|2|3> <speaker>/<video>/<file>.wav', got {line!r}", n))
            continue
        lists[sets[fields[0]]].append(fields[1])
    return {s: sorted(paths) for s, paths in lists.items()}


def voxceleb1(
    split: str,
    cache_dir: Path,
    root: Path,
    mean: float,
    std: float,
    download: bool = False,
    db_of_squared_power: bool = True,
    pad_mode: str = "reflect",
    on_corrupt: str = "error",
) -> SpeechDataset:
    """VoxCeleb1 speaker identification from ``iden_split.txt``: train = sets 1 + 2, test = set 3.

    Labels index the sorted speaker ids of all three sets (DABS indexes each split's own
    speakers, which is the same mapping since every speaker is in every set). The list is
    read as torchaudio's ``VoxCeleb1Identification`` reads it (sorted per set). The data
    is manual: ``download`` is ignored (the archives' host now needs registration).
    """
    corrupt = CorruptLog("voxceleb1", split, on_corrupt)
    if not (Path(root) / "wav").is_dir():
        raise FileNotFoundError(f"VoxCeleb1 not found: no folder {Path(root) / 'wav'}")
    lists = voxceleb_lists(Path(root) / "iden_split.txt", corrupt)
    index = _index_map(Path(relative).parts[0] for paths in lists.values() for relative in paths)
    files, labels = [], []
    for s in ("train", "dev") if split == "train" else ("test",):
        for relative in lists[s]:
            files.append(Path(root) / "wav" / relative)
            labels.append(index[Path(relative).parts[0]])
    clips = Clips(files, np.array(labels, dtype=np.int64))
    front_end = _front_end(mean, std, db_of_squared_power, pad_mode)
    return spectrogram_dataset(clips, split, cache_dir, root, "voxceleb1", front_end, corrupt)


# --------------------------------------------------------------------------- AudioMNIST


def audio_mnist(
    split: str,
    cache_dir: Path,
    root: Path,
    mean: float,
    std: float,
    download: bool = False,
    native_sample_rate: bool = True,
    db_of_squared_power: bool = True,
    pad_mode: str = "reflect",
    on_corrupt: str = "error",
) -> SpeechDataset:
    """AudioMNIST digits (``data/NN/{digit}_{speaker}_{rep}.wav``), DABS's speaker split (48 / 12 speakers).

    ``native_sample_rate`` (DABS) keeps the 48 kHz audio; ``False`` resamples to 16 kHz
    like the other speech datasets. The clone is manual: ``download`` is ignored.
    """
    corrupt = CorruptLog("audio_mnist", split, on_corrupt)
    speakers = AUDIO_MNIST_TRAIN_SPEAKERS + AUDIO_MNIST_VAL_SPEAKERS if split == "train" else AUDIO_MNIST_TEST_SPEAKERS
    files, digits = [], []
    for f in (f for s in speakers for f in sorted((Path(root) / "data" / f"{s:02d}").glob("*.wav"))):
        digit = f.name.split("_")[0]
        if not (digit.isdigit() and 0 <= int(digit) <= 9):  # its label would be a guess
            corrupt.add(CorruptDataError(f, "file name is not <digit>_<speaker>_<n>.wav with a digit 0-9"))
            continue
        files.append(f)
        digits.append(int(digit))
    clips = Clips(files, np.array(digits, dtype=np.int64))
    front_end = _front_end(mean, std, db_of_squared_power, pad_mode, None if native_sample_rate else 16_000)
    return spectrogram_dataset(clips, split, cache_dir, root, "audio_mnist", front_end, corrupt)


# --------------------------------------------------------------------------- Speech Commands


def _speech_commands(
    root: Path, subset: str | None, url: str, folder_in_archive: str, download: bool
) -> list[tuple[Path, str]]:
    """(file, word) of one torchaudio SPEECHCOMMANDS subset (None = every word clip), sorted."""
    folder = Path(root) / folder_in_archive / url
    if download and not folder.is_dir() and url in ("speech_commands_v0.01", "speech_commands_v0.02"):
        archive = f"http://download.tensorflow.org/data/{url}.tar.gz"
        download_and_extract(archive, Path(root), extract_root=folder, sha256=SHA256.get(archive))
    ds = torchaudio.datasets.SPEECHCOMMANDS(
        root, url=url, folder_in_archive=folder_in_archive, download=False, subset=subset
    )
    meta = [ds.get_metadata(n) for n in range(len(ds))]
    return [(Path(root) / folder_in_archive / m[0], m[2]) for m in meta]


def google_speech(
    split: str,
    cache_dir: Path,
    root: Path,
    mean: float,
    std: float,
    download: bool = False,
    url: str = "speech_commands_v0.02",
    folder_in_archive: str = "SpeechCommands",
    gsc_train_includes_test: bool = True,
    gsc_background_noise_class: bool = True,
    db_of_squared_power: bool = True,
    pad_mode: str = "reflect",
    on_corrupt: str = "error",
) -> SpeechDataset:
    """Google Speech Commands v0.02, 35 words (+ ``_background_noise_``), labels in DABS's order.

    ``test`` = ``testing_list.txt``. ``train`` = the official training files plus
    ``validation_list.txt``; with ``gsc_train_includes_test`` (DABS's bug: list lines kept
    their newline, so nothing was removed) it is every clip, test files included, plus
    the validation list a second time. ``gsc_background_noise_class`` adds the six long
    ``_background_noise_`` recordings to train as class 35, as DABS's directory walk did.
    """
    corrupt = CorruptLog("google_speech", split, on_corrupt)

    def get(subset: str | None) -> list[tuple[Path, str]]:
        return _speech_commands(root, subset, url, folder_in_archive, download)

    if split == "test":
        items = get("testing")
    else:
        items = get(None) if gsc_train_includes_test else get("training")
        if gsc_background_noise_class:
            folder = Path(root) / folder_in_archive / url / GSC_BACKGROUND
            items += [(f, GSC_BACKGROUND) for f in sorted(folder.glob("*.wav"))]
        items += get("validation")
    clips = Clips([f for f, _ in items], np.array([GSC_LABELS.index(w.lower()) for _, w in items], dtype=np.int64))
    front_end = _front_end(mean, std, db_of_squared_power, pad_mode)
    return spectrogram_dataset(clips, split, cache_dir, root, "google_speech", front_end, corrupt)


# --------------------------------------------------------------------------- Fluent Speech Commands


def fluent_rows(path: Path, corrupt: CorruptLog) -> list[tuple[str, dict[str, str]]]:
    """``(wav path relative to the dataset folder, {"action", "object", "location": value})`` per row of a Fluent CSV.

    Read as torchaudio's ``FluentSpeechCommands.get_metadata`` reads it (the fields after the
    path: speaker, transcription, action, object, location; the file is
    ``wavs/speakers/<speaker>/<name of the path>.wav``). A row with another number of fields
    than the header, an empty path or a value outside DABS's lists goes to ``corrupt``.
    """
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or "path" not in header:
                raise CorruptDataError(path, "no 'path' column in the header")
            where = header.index("path")
            for record in reader:
                if not record:
                    continue
                try:
                    if len(record) != 7 or len(record) != len(header):
                        raise ValueError(f"expected 7 fields (as the header), got {len(record)}")
                    speaker, _, action, obj, location = record[2:]
                    name = record[where].split("/")[-1].split(".")[0]
                    slots = {"action": action, "object": obj, "location": location}
                    bad = [f"{k} {v!r}" for k, v in slots.items() if v not in FLUENT_LABELS[k]]
                    if not name or not speaker or bad:
                        raise ValueError(f"unknown {', '.join(bad)}" if bad else "empty path or speaker")
                except ValueError as err:
                    corrupt.add(CorruptDataError(path, str(err), reader.line_num))
                    continue
                rows.append((os.path.join("wavs", "speakers", speaker, f"{name}.wav"), slots))
    except (UnicodeDecodeError, csv.Error) as err:
        raise CorruptDataError(path, f"not a UTF-8 CSV file ({err})") from err
    return rows


def fluent_speech(
    split: str,
    cache_dir: Path,
    root: Path,
    mean: float,
    std: float,
    label: str,
    download: bool = False,
    db_of_squared_power: bool = True,
    pad_mode: str = "reflect",
    on_corrupt: str = "error",
) -> SpeechDataset:
    """Fluent Speech Commands, one slot (``action``, ``object`` or ``location``) as the class.

    train = ``train_data.csv`` + ``valid_data.csv``, test = ``test_data.csv``; labels index
    DABS's fixed lists. The three slots share one spectrogram cache. Manual data:
    ``download`` is ignored.
    """
    if label not in FLUENT_LABELS:
        raise ValueError(f"label must be one of {', '.join(FLUENT_LABELS)}; got {label!r}")
    corrupt = CorruptLog(f"fluent_speech_{label}", split, on_corrupt)
    folder = Path(root) / "fluent_speech_commands_dataset"
    if not folder.is_dir():
        raise FileNotFoundError(f"Fluent Speech Commands not found: no folder {folder}")
    files, labels = [], []
    for subset in ("train", "valid") if split == "train" else ("test",):
        for relative, slots in fluent_rows(folder / "data" / f"{subset}_data.csv", corrupt):
            files.append(folder / relative)
            labels.append(FLUENT_LABELS[label].index(slots[label]))
    clips = Clips(files, np.array(labels, dtype=np.int64))
    front_end = _front_end(mean, std, db_of_squared_power, pad_mode)
    return spectrogram_dataset(clips, split, cache_dir, root, "fluent_speech", front_end, corrupt)
