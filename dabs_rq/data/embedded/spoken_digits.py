"""Spoken digits by many synthetic speakers (an offline AudioMNIST), as log-mel spectrograms.

A *speaker* is an espeak-ng English accent x voice variant x pitch; every speaker says
"zero".."nine" ``repetitions`` times at different speaking rates. Speakers are split
into disjoint pools, so pretraining never hears a transfer speaker:

* ``pretrain`` task: the first ``pretrain_speakers`` speakers (labels = digits, unused);
* ``digit`` task: 10-way digit recognition, trained and tested on disjoint speakers
  of the transfer pool (like AudioMNIST's speaker split);
* ``speaker`` task: speaker identification among ``speaker_id_speakers`` transfer
  speakers, tested on a held-out repetition (different speaking rate).

Front-end (ours, DABS-like at a smaller size): 16 kHz, first second zero-padded at the
end, 64-bin log-mel (n_fft 400, hop 250), 64 frames -> [1, 64, 64] (the shared front end,
:func:`dabs_rq.data.audio_features.log_mel`, with :func:`mel_settings`), normalised with the
pretraining pool's scalar mean and std (DABS uses per-dataset scalar constants).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchaudio

from dabs_rq.data.audio_features import MelSettings, log_mel
from dabs_rq.data.embedded.espeak import synthesize_all
from dabs_rq.data.splits import check_split
from dabs_rq.data.tensor_dataset import TensorInputsDataset, cached_tensors

ACCENTS = ("en", "en-us", "en-029", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc")
VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "Andy",
    "Alicia",
    "klatt",
    "klatt2",
    "Gene",
    "Mike",
    "adam",
    "belinda",
    "david",
    "edward",
    "john",
    "linda",
    "paul",
    "robert",
)
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TASKS = ("pretrain", "digit", "speaker")
SAMPLE_RATE = 16_000


def _speakers(n: int, seed: int) -> list[tuple[str, int]]:
    """``n`` distinct (voice, pitch) speakers drawn reproducibly."""
    rng = np.random.RandomState(seed)
    chosen: dict[tuple[str, int], None] = {}
    while len(chosen) < n:
        voice = f"{ACCENTS[rng.randint(len(ACCENTS))]}+{VARIANTS[rng.randint(len(VARIANTS))]}"
        chosen[(voice, int(rng.randint(20, 81)))] = None
    return list(chosen)


def mel_settings(n_mels: int, frames: int) -> MelSettings:
    """Our front end: ``n_mels`` HTK mel bands (n_fft 400, hop 250), the first ``frames`` frames, ``ln(power + 1e-6)``."""
    return MelSettings(n_fft=400, hop_length=250, n_mels=n_mels, frames=frames, scale="ln", eps=1e-6)


def _build(n_speakers: int, repetitions: int, seed: int, n_mels: int, frames: int, pretrain_speakers: int) -> dict:
    rng = np.random.RandomState(seed + 1)
    utterances, digit, speaker, rep = [], [], [], []
    for s, (voice, pitch) in enumerate(_speakers(n_speakers, seed)):
        for r in range(repetitions):
            for d, word in enumerate(WORDS):
                utterances.append((word, voice, pitch, int(rng.randint(130, 201))))
                digit.append(d), speaker.append(s), rep.append(r)
    waves = []
    espeak_rate, audios = synthesize_all(utterances, seed)
    for (word, voice, _, _), audio in zip(utterances, audios):
        if not len(audio):  # a silent clip labelled with a digit would be a wrong example
            raise RuntimeError(f"espeak-ng produced no audio for {word!r} by voice {voice!r}")
        waves.append(torch.from_numpy(audio.astype(np.float32) / 32768.0))
    length = espeak_rate  # one second before resampling
    padded = torch.zeros(len(waves), length)
    for i, w in enumerate(waves):
        padded[i, : min(len(w), length)] = w[:length]
    resampled = torchaudio.functional.resample(padded, espeak_rate, SAMPLE_RATE)
    spectrograms = log_mel(resampled, SAMPLE_RATE, mel_settings(n_mels, frames))
    speaker_t = torch.tensor(speaker)
    pool = spectrograms[speaker_t < pretrain_speakers]
    mean, std = pool.mean(), pool.std()
    return {
        "spectrograms": ((spectrograms - mean) / std).float(),
        "digit": torch.tensor(digit),
        "speaker": speaker_t,
        "repetition": torch.tensor(rep),
    }


def spoken_digits(
    split: str,
    cache_dir: Path,
    task: str = "digit",
    n_speakers: int = 100,
    pretrain_speakers: int = 60,
    digit_test_speakers: int = 10,
    speaker_id_speakers: int = 20,
    repetitions: int = 3,
    n_mels: int = 64,
    frames: int = 64,
    seed: int = 0,
) -> TensorInputsDataset:
    """Dataset of ([1, n_mels, frames] log-mel,) -> label for ``task`` and ``split`` (see module doc)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    check_split(split)
    if not 0 < pretrain_speakers < n_speakers:
        raise ValueError("pretrain_speakers must leave speakers for transfer")
    # v2: audio synthesized reproducibly (espeak_ng_SetRandSeed, fresh process); v1 caches were not
    key = f"spoken_digits_v2_s{n_speakers}_p{pretrain_speakers}_r{repetitions}_m{n_mels}x{frames}_seed{seed}.pt"
    data = cached_tensors(
        Path(cache_dir) / key, lambda: _build(n_speakers, repetitions, seed, n_mels, frames, pretrain_speakers)
    )
    speaker, rep = data["speaker"], data["repetition"]
    if task == "pretrain":
        keep = speaker < pretrain_speakers
        labels = data["digit"]
    elif task == "digit":
        first_test = n_speakers - digit_test_speakers
        pool = speaker >= pretrain_speakers
        keep = pool & ((speaker >= first_test) if split == "test" else (speaker < first_test))
        labels = data["digit"]
    else:
        pool = (speaker >= pretrain_speakers) & (speaker < pretrain_speakers + speaker_id_speakers)
        held_out = rep == repetitions - 1
        keep = pool & (held_out if split == "test" else ~held_out)
        labels = speaker - pretrain_speakers
    return TensorInputsDataset([data["spectrograms"][keep]], labels[keep])
