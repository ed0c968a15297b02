"""DABS speech datasets: each YAML's reader on a tiny copy of the dataset in its real on-disk layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
import torch
from omegaconf import OmegaConf

from dabs_rq.data import domains
from dabs_rq.data.datamodule import DomainDataModule
from dabs_rq.data.readers.speech import MAX_LENGTH
from dabs_rq.run import run
from tests.conftest import compose_config, missing_dataset, pipeline_overrides
from tests.speech_fixtures import write_all

SPEECH = [
    "librispeech",
    "librispeech_transfer",
    "voxceleb1",
    "audio_mnist",
    "google_speech",
    "fluent_speech_location",
    "fluent_speech_action",
    "fluent_speech_object",
]
TRANSFER = SPEECH[1:]
PAPER_NAMES = {
    "librispeech_transfer": "LibriSpeech Sp. ID",
    "voxceleb1": "VoxCeleb Sp. ID",
    "audio_mnist": "AudioMNIST",
    "google_speech": "Google Speech",
    "fluent_speech_location": "Fluent Locations",
    "fluent_speech_action": "Fluent Actions",
    "fluent_speech_object": "Fluent Objects",
}


@pytest.fixture(scope="session")
def speech_data(tmp_path_factory) -> tuple[Path, dict]:
    """(data root holding every speech dataset, {name: (train size, test size)})."""
    root = tmp_path_factory.mktemp("speech_data")
    return root, write_all(root)


def _module(name: str, root: Path, cache: Path, **quirks) -> DomainDataModule:
    cfg = domains.load(name)
    if quirks:
        cfg.reader_options = OmegaConf.merge(cfg.reader_options, quirks)
    return DomainDataModule(cfg, cache_dir=cache, data_root=root)


# --------------------------------------------------------------------------- independent front-end


def _slaney_mel_filters(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) (Slaney scale, area-normalised), re-derived in numpy."""
    logstep = np.log(6.4) / 27.0

    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / logstep, f / (200.0 / 3))

    def mel_to_hz(m):
        return np.where(m >= 15.0, 1000.0 * np.exp(logstep * (m - 15.0)), m * (200.0 / 3))

    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(rate / 2.0), n_mels + 2))
    ramps = mel_f[:, None] - np.fft.rfftfreq(n_fft, 1.0 / rate)[None, :]
    fdiff = np.diff(mel_f)[:, None]
    weights = np.maximum(0, np.minimum(-ramps[:-2] / fdiff[:-1], ramps[2:] / fdiff[1:]))
    return weights * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]


def dabs_reference(wave: np.ndarray, rate: int, mean: float, std: float, squared: bool = True) -> np.ndarray:
    """DABS's front-end in float64 numpy: pad/crop, librosa-default melspectrogram, power_to_db(S**2), normalise.

    (Checked against librosa 0.11 ``power_to_db(melspectrogram(..., pad_mode="reflect")**2)``
    to 1e-6 dB when written.)
    """
    y = np.zeros(MAX_LENGTH)
    y[: min(len(wave), MAX_LENGTH)] = wave[:MAX_LENGTH]
    n_fft, hop = 2048, 672
    y = np.pad(y, n_fft // 2, mode="reflect")
    starts = hop * np.arange(1 + (len(y) - n_fft) // hop)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    power = np.abs(np.fft.rfft(y[starts[:, None] + np.arange(n_fft)] * window, axis=1)) ** 2
    mel = _slaney_mel_filters(rate, n_fft, 224) @ power.T
    db = 10 * np.log10(np.maximum(1e-10, mel**2 if squared else mel))
    db = np.maximum(db, db.max() - 80.0)
    return (db - mean) / std if squared else (db - mean / 2) / (std / 2)


# --------------------------------------------------------------------------- tests


def test_every_speech_yaml_is_a_dabs_speech_dataset():
    pretrain = domains.load("librispeech", role="pretrain")
    assert list(pretrain.transfer) == TRANSFER
    for cfg in [pretrain, *domains.transfer_datasets(pretrain)]:
        assert cfg.domain == "Speech" and cfg.batch_size == 64
        assert OmegaConf.to_container(cfg.inputs) == [
            {
                "_target_": "dabs_rq.encoder.PatchEmbedding2d",
                "image_size": [224, 224],
                "patch_size": [16, 16],
                "channels": 1,
            }
        ]
        assert {"mean", "std"} <= set(cfg.reader) and cfg.data.download in ("auto", "manual")
        for key in ("source", "size", "license"):
            assert cfg.data.get(key), (cfg.name, key)
        if cfg.role == "transfer":
            assert cfg.paper_name == PAPER_NAMES[cfg.name]
    paper = Path(__file__).resolve().parents[1] / "results/reference/paper_table1.csv"
    assert set(PAPER_NAMES.values()) <= {line.split(",")[0] for line in paper.read_text().splitlines()}


@pytest.mark.parametrize("name", SPEECH)
def test_reader_gives_dabs_spectrograms_and_the_dabs_splits(name, speech_data, data_cache):
    root, sizes = speech_data
    data = _module(name, root, data_cache)
    cfg = data.cfg
    num_classes = cfg.task.num_classes if cfg.role == "transfer" else 10**6
    for split, expected in zip(("train", "test"), sizes[name]):
        dataset = data.split(split)
        assert len(dataset) == expected, split
        (x,), y = dataset[0]
        assert x.shape == (1, 224, 224) and x.dtype == torch.float32 and y.dtype == torch.int64
        (batch,), labels = dataset[list(range(len(dataset)))]
        assert batch.shape == (len(dataset), 1, 224, 224) and torch.isfinite(batch).all()
        assert 0 <= int(labels.min()) and int(labels.max()) < num_classes
        assert batch.abs().max() < 50  # normalised, not raw dB
    (x,), y = next(iter(data.test_dataloader()))
    assert x.shape == (min(64, sizes[name][1]), 1, 224, 224)


def test_spectrogram_matches_an_independent_dabs_front_end(speech_data, data_cache):
    """AudioMNIST (48 kHz, kept native) read back with scipy, through a numpy re-derivation of librosa."""
    root, _ = speech_data
    for squared in (True, False):
        dataset = _module("audio_mnist", root, data_cache, db_of_squared_power=squared).split("test")
        rate, pcm = scipy.io.wavfile.read(dataset.files[0])
        assert rate == 48_000
        reader = domains.load("audio_mnist").reader
        expected = dabs_reference(pcm / 32768.0, rate, reader.mean, reader.std, squared=squared)
        (x,), _ = dataset[0]
        np.testing.assert_allclose(x[0].numpy(), expected, atol=2e-2)


def test_audio_mnist_can_be_resampled_to_16k(speech_data, data_cache):
    root, _ = speech_data
    native = _module("audio_mnist", root, data_cache).split("test")[0][0][0]
    resampled = _module("audio_mnist", root, data_cache, native_sample_rate=False).split("test")[0][0][0]
    assert not torch.allclose(native, resampled)


def test_long_training_clips_are_read_as_their_first_or_last_window(speech_data, data_cache):
    root, _ = speech_data
    train = _module("librispeech", root, data_cache).split("train")
    assert train.files[0].endswith("19-198-0000.flac")  # the clip longer than the window
    torch.manual_seed(0)
    draws = torch.stack([train[0][0][0] for _ in range(16)])
    distinct = torch.unique(draws.flatten(1), dim=0)
    assert len(distinct) == 2  # first and last window, both seen
    short = torch.stack([train[1][0][0] for _ in range(4)])
    assert (short == short[0]).all()
    (batch,), _ = train[[0, 1, 0]]
    assert any(torch.equal(batch[0], d.view(1, 224, 224)) for d in distinct)
    test = _module("voxceleb1", root, data_cache).split("test")
    assert torch.equal(test[0][0][0], test[0][0][0])  # evaluation: always the first window


def test_google_speech_quirk_flags_choose_the_training_set(speech_data, data_cache):
    root, sizes = speech_data
    dabs = _module("google_speech", root, data_cache)
    fixed = _module("google_speech", root, data_cache, gsc_train_includes_test=False)
    test_files = set(dabs.split("test").files)
    assert test_files <= set(dabs.split("train").files)  # DABS's bug, reproduced by default
    assert not test_files & set(fixed.split("train").files)
    assert (len(fixed.split("train")), len(fixed.split("test"))) == sizes["google_speech_fixed"]
    assert 35 in dabs.split("train").labels.tolist()  # _background_noise_ is class 35 of 36
    no_noise = _module("google_speech", root, data_cache, gsc_background_noise_class=False).split("train")
    assert 35 not in no_noise.labels.tolist() and len(no_noise) == sizes["google_speech"][0] - 2


@pytest.mark.parametrize("name", ["voxceleb1", "audio_mnist", "fluent_speech_action"])
def test_missing_manual_dataset_says_how_to_get_it(name, tmp_path, data_cache):
    data = _module(name, tmp_path / "empty", data_cache)
    with missing_dataset(name, "download it by hand from http"):
        data.split("test")


def test_missing_downloadable_dataset_points_to_download_true(tmp_path, data_cache):
    with missing_dataset("google_speech", "re-run with download=true to fetch it from"):
        _module("google_speech", tmp_path / "empty", data_cache).split("train")


@pytest.mark.slow
def test_pretrain_on_librispeech_and_transfer_to_every_speech_set(speech_data, data_cache, tmp_path):
    root, sizes = speech_data
    records = run(
        compose_config(
            pipeline_overrides(root, tmp_path, data_cache, domain="librispeech", algorithm="emix", batch_size=4)
        )
    )
    assert [r["dataset"] for r in records] == TRANSFER
    for record in records:
        path = tmp_path / "results/records/default" / record["dataset"] / "emix/seed0.json"
        stored = json.loads(path.read_text())
        assert stored["pretraining"]["steps"] == 2 and 0 <= stored["value"] <= 100
        assert (stored["protocol"]["n_train"], stored["protocol"]["n_test"]) == sizes[record["dataset"]]
        assert stored["paper_name"] == PAPER_NAMES[record["dataset"]]
    assert records[TRANSFER.index("google_speech")]["reader_options"]["gsc_train_includes_test"] is True
