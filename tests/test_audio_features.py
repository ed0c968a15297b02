"""The shared audio front end: each reader's settings give what its own torchaudio calls gave."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio

from dabs_rq.data.audio_features import MelSettings, fix_length, log_mel, resample
from dabs_rq.data.embedded.spoken_digits import mel_settings
from dabs_rq.data.generic.audio import AudioFiles
from dabs_rq.data.readers.speech import FrontEnd


def _waves(samples: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    waves = torch.from_numpy((0.2 * rng.standard_normal((3, samples))).astype(np.float32))
    waves[2, samples // 10 :] = 0  # mostly silence: the dB floor matters
    return waves


def test_dabs_settings_are_librosas_slaney_mel_and_db_of_the_squared_power():
    waves, front_end = _waves(20_000), FrontEnd(mean=0.0, std=1.0)
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=16_000,
        n_fft=2048,
        hop_length=672,
        n_mels=224,
        pad_mode="reflect",
        norm="slaney",
        mel_scale="slaney",
    )
    expected = torchaudio.functional.amplitude_to_DB(mel(waves).unsqueeze(1) ** 2, 10.0, 1e-10, 0.0, top_db=80.0)
    assert torch.equal(log_mel(waves, 16_000, front_end.mel()), expected)


def test_spoken_digit_settings_are_the_natural_log_of_the_first_frames():
    waves = _waves(16_000)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16_000, n_fft=400, hop_length=250, n_mels=40)
    expected = torch.log(mel(waves)[..., :50] + 1e-6).unsqueeze(1)
    assert torch.equal(log_mel(waves, 16_000, mel_settings(40, 50)), expected)


def test_generic_audio_settings_floor_each_clip_80_db_below_its_own_maximum():
    spec = AudioFiles(sample_rate=8000, clip_seconds=1.0, n_mels=32, n_fft=512, hop_length=100)
    waves = _waves(spec.samples)
    db = log_mel(waves, spec.sample_rate, spec.mel())
    assert db.shape == (3, 1, 32, spec.frames)
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=8000, n_fft=512, hop_length=100, n_mels=32, pad_mode="constant"
    )
    power = mel(waves).unsqueeze(1)[..., : spec.frames]
    expected = 10 * torch.log10(power.clamp_min(1e-10))
    expected = torch.maximum(expected, expected.amax(dim=(1, 2, 3), keepdim=True) - 80.0)
    torch.testing.assert_close(db, expected, rtol=0, atol=1e-4)
    assert torch.equal(db.amax(dim=(1, 2, 3)) - db.amin(dim=(1, 2, 3)) <= 80.0, torch.ones(3, dtype=torch.bool))


def test_an_unknown_log_scale_is_refused():
    with pytest.raises(ValueError, match="scale"):
        log_mel(_waves(4_000), 16_000, MelSettings(n_fft=400, hop_length=100, n_mels=16, scale="log2"))


def test_fix_length_and_resample():
    wave = np.arange(10, dtype=np.float32)
    assert np.array_equal(fix_length(wave, 4), wave[:4]) and np.array_equal(fix_length(wave, 4, last=True), wave[6:])
    padded = fix_length(wave, 12)
    assert padded.dtype == np.float32 and np.array_equal(padded, np.r_[wave, 0, 0])
    assert resample(wave, 8000, 8000) is wave
    assert resample(np.ones(8000, dtype=np.float32), 8000, 16000).shape == (16000,)
