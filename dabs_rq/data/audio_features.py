"""The one log-mel front end of every audio reader: waveforms -> [B, 1, n_mels, frames] log-mel "images".

The DABS speech readers (:mod:`dabs_rq.data.readers.speech`), the embedded spoken digits
(:mod:`dabs_rq.data.embedded.spoken_digits`) and the generic audio reader
(:mod:`dabs_rq.data.generic.audio`) all compute a power mel spectrogram and take its log; they
differ only in settings (DABS's librosa-like Slaney mel and squared power, our smaller HTK mel),
so each keeps its own :class:`MelSettings` and this module the single implementation. Every
step is the torchaudio call the readers made before (the numbers are unchanged, bit for bit):

1. ``torchaudio.transforms.MelSpectrogram`` (Hann window of ``n_fft`` samples, ``center=True``
   frames padded with ``pad_mode``, power 2, ``n_mels`` bands from 0 Hz to ``sample_rate / 2``
   on ``mel_scale`` with ``norm``), one transform per setting, built once and reused;
2. the first ``frames`` frames (``None``: all ``1 + samples // hop_length``);
3. ``square_power``: the power squared (DABS's ``power_to_db(S ** 2)``);
4. the log: ``"db"`` is ``10 * log10(max(power, amin))`` floored ``top_db`` below each
   example's loudest value (``torchaudio.functional.amplitude_to_DB`` on the ``[B, 1, F, T]``
   batch, whose floor is per example), ``"ln"`` is ``ln(power + eps)``.

Before it, :func:`resample` and :func:`fix_length` bring a decoded clip to the reader's rate and
length. Normalisation (dataset constants or train statistics) is the reader's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
import torchaudio
from torch import Tensor


@dataclass(frozen=True)
class MelSettings:
    """How one reader turns waveforms into log-mel spectrograms (see the module docstring for each step)."""

    n_fft: int
    hop_length: int
    n_mels: int
    pad_mode: str = "reflect"
    mel_scale: str = "htk"
    norm: str | None = None
    #: frames kept (the first ones); None: every ``1 + samples // hop_length`` frame
    frames: int | None = None
    #: DABS's quirk: the dB of the squared power
    square_power: bool = False
    scale: Literal["db", "ln"] = "db"
    #: ``"db"``: the power's floor before the log, and the dynamic range kept below each example's maximum
    amin: float = 1e-10
    top_db: float | None = 80.0
    #: ``"ln"``: added to the power before the log
    eps: float = 1e-6


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """A float32 clip at ``rate`` resampled to ``target`` (``torchaudio.functional.resample``); unchanged if equal."""
    if rate == target:
        return wave
    return torchaudio.functional.resample(torch.from_numpy(wave), rate, target).numpy()


def fix_length(wave: np.ndarray, length: int, last: bool = False) -> np.ndarray:
    """``length`` samples: the first (or, with ``last``, the final) window, or the clip zero-padded at the end."""
    if len(wave) > length:
        return wave[-length:] if last else wave[:length]
    out = np.zeros(length, dtype=np.float32)
    out[: len(wave)] = wave
    return out


@lru_cache(maxsize=16)
def mel_transform(
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    pad_mode: str = "reflect",
    mel_scale: str = "htk",
    norm: str | None = None,
) -> torchaudio.transforms.MelSpectrogram:
    """The (cached) power mel spectrogram transform of one setting at ``sample_rate``."""
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate,
        n_fft=n_fft,
        win_length=n_fft,
        hop_length=hop_length,
        f_min=0.0,
        f_max=None,
        n_mels=n_mels,
        window_fn=torch.hann_window,
        power=2.0,
        normalized=False,
        center=True,
        pad_mode=pad_mode,
        norm=norm,
        mel_scale=mel_scale,
    )


def mel_power(waves: Tensor, sample_rate: int, settings: MelSettings) -> Tensor:
    """[B, samples] waveforms -> [B, 1, n_mels, frames] mel power (``settings.frames`` kept, if set)."""
    s = settings
    with torch.no_grad():
        mel = mel_transform(int(sample_rate), s.n_fft, s.hop_length, s.n_mels, s.pad_mode, s.mel_scale, s.norm)
        power = mel(waves.float()).unsqueeze(1)
    return power if s.frames is None else power[..., : s.frames]


def log_mel(waves: Tensor, sample_rate: int, settings: MelSettings) -> Tensor:
    """[B, samples] waveforms -> [B, 1, n_mels, frames] float32 log-mel spectrograms (not normalised)."""
    power = mel_power(waves, sample_rate, settings)
    with torch.no_grad():
        if settings.square_power:
            power = power**2
        if settings.scale == "ln":
            return torch.log(power + settings.eps)
        if settings.scale != "db":
            raise ValueError(f"scale must be 'db' or 'ln'; got {settings.scale!r}")
        return torchaudio.functional.amplitude_to_DB(
            power, multiplier=10.0, amin=settings.amin, db_multiplier=0.0, top_db=settings.top_db
        )
