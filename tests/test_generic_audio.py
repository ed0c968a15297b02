"""Generic audio reader: a brand-new audio dataset from YAML alone, through the public command."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from dabs_rq.data import domains
from dabs_rq.data.domains import DomainConfigError
from dabs_rq.data.generic.audio import AudioFiles, audio_files, read_mono
from dabs_rq.data.storage import CorruptDataError
from tests.conftest import load_split
from tests.generic_helpers import public_run_adds_row, write_domain

#: class -> tone (Hz); all below 4 kHz, so an 8 kHz file holds them
TONES = {"low": 300.0, "mid": 1000.0, "high": 2500.0}
#: 0.5 s at 16 kHz, hop 250 -> 8000 // 250 = 32 frames; 32 mel bands
READER = {
    "_target_": "dabs_rq.data.generic.audio.audio_files",
    "audio_root": "clips",
    "clip_seconds": 0.5,
    "n_mels": 32,
    "n_fft": 512,
    "hop_length": 250,
    "split_seed": 1,
    "test_fraction": 0.25,
}
INPUTS = [{"_target_": "dabs_rq.encoder.PatchEmbedding2d", "image_size": [32, 32], "patch_size": [8, 8], "channels": 1}]


def _tone(freq: float, rate: int, seconds: float, rng: np.random.Generator, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6)) + 0.01 * rng.normal(size=len(t))
    return np.repeat(wave[:, None], channels, axis=1).astype(np.float32) if channels > 1 else wave.astype(np.float32)


def _clips(folder, per_class=4):
    """clips/<class>/<class>_<k>.wav, every other one at 8 kHz, 0.35 .. 0.65 s long (cut and padded);
    labels.csv: path (relative to clips/), sound, split (the last clip of each class: test)."""
    rng = np.random.default_rng(0)
    rows = ["path,sound,split"]
    for name, freq in TONES.items():
        (folder / "clips" / name).mkdir(parents=True)
        for k in range(per_class):
            rate = 8000 if k % 2 else 16000
            sf.write(folder / "clips" / name / f"{name}_{k}.wav", _tone(freq, rate, 0.35 + 0.1 * k, rng), rate)
            rows.append(f"{name}/{name}_{k}.wav,{name},{'test' if k == per_class - 1 else 'train'}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")


def _yamls(folder, **reader_changes):
    write_domain(
        folder,
        "my_sounds",
        display_name="My sounds",
        domain="My audio",
        role="pretrain",
        inputs=INPUTS,
        reader={**READER, "label_type": "none"},
        batch_size=4,
        transfer=["my_sounds_tone"],
    )
    return write_domain(
        folder,
        "my_sounds_tone",
        display_name="My tones",
        domain="My audio",
        role="transfer",
        inputs=INPUTS,
        reader={**READER, **reader_changes},
        batch_size=4,
        task={"_target_": "dabs_rq.tasks.MulticlassTask", "num_classes": 3},
    )


def _all(dataset):
    (x,), y = dataset[list(range(len(dataset)))]
    return x, y


def _tone_order_follows_labels(x: torch.Tensor, y: torch.Tensor, classes: list[str]) -> bool:
    """Each clip's loudest mel band is the one of its label's tone (bands rise with frequency)."""
    bands = x.mean(dim=-1)[:, 0].argmax(dim=-1)
    by_class = {c: set(bands[y == i].tolist()) for i, c in enumerate(classes)}
    low, mid, high = by_class["low"], by_class["mid"], by_class["high"]
    return bool(low and mid and high) and max(low) < min(mid) and max(mid) < min(high)


@pytest.mark.integration
def test_a_new_audio_domain_runs_pretrain_transfer_table_from_yaml_alone(tmp_path, data_cache):
    mine = tmp_path / "mine"
    _clips(mine)
    _yamls(mine)
    stored = public_run_adds_row(mine, tmp_path, data_cache, "my_sounds", "my_sounds_tone", "My tones", "My audio")
    # 12 clips, a seeded 25% of them held out
    assert stored["protocol"]["n_train"] == 9 and stored["protocol"]["n_test"] == 3


def test_folder_labels_shapes_and_train_normalisation(tmp_path):
    mine = tmp_path / "mine"
    _clips(mine)
    _yamls(mine)
    cfg = domains.load("my_sounds_tone", extra=[mine])
    x, y = _all(load_split("my_sounds_tone", "train", tmp_path, tmp_path / "cache", cfg=cfg))
    test_x, test_y = _all(load_split("my_sounds_tone", "test", tmp_path, tmp_path / "cache", cfg=cfg))
    assert x.dtype == torch.float32 and x.shape == (9, 1, 32, 32) and test_x.shape == (3, 1, 32, 32)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3  # the train split's statistics
    # classes sorted (high=0, low=1, mid=2); every clip keeps its folder's label, at 8 or 16 kHz
    classes = sorted(TONES)
    assert sorted(set(torch.cat([y, test_y]).tolist())) == [0, 1, 2]
    assert _tone_order_follows_labels(torch.cat([x, test_x]), torch.cat([y, test_y]), classes)
    # paths are resolved against the YAML's folder, so the run works from any directory
    assert cfg.reader.audio_root == str((mine / "clips").resolve())
    # the pretraining YAML reads the same clips without labels
    pre = domains.load("my_sounds", extra=[mine])
    pre_x, pre_y = _all(load_split("my_sounds", "train", tmp_path, tmp_path / "cache", cfg=pre))
    assert pre_x.shape == (9, 1, 32, 32) and set(pre_y.tolist()) == {0}


def test_table_labels_column_split_stereo_and_the_frames_formula(tmp_path):
    mine = tmp_path / "mine"
    _clips(mine)
    rng = np.random.default_rng(3)
    # a 44.1 kHz stereo clip: the low tone on one channel, the high one on the other -> both in the mix
    sf.write(
        mine / "clips" / "both.flac", np.stack([_tone(300, 44100, 0.5, rng), _tone(2500, 44100, 0.5, rng)], 1), 44100
    )
    with (mine / "labels.csv").open("a") as f:
        f.write("both.flac,mid,test\n")
    changes = {
        "table": "labels.csv",
        "label_column": "sound",
        "split_by": "column",
        "split_column": "split",
        "n_mels": 40,
        "hop_length": 160,
    }  # frames = round(0.5 * 16000) // 160 = 50
    inputs = [{**INPUTS[0], "image_size": [40, 50], "patch_size": [8, 10]}]
    write_domain(
        mine,
        "tones_table",
        domain="d",
        role="transfer",
        inputs=inputs,
        batch_size=4,
        task={"_target_": "dabs_rq.tasks.MulticlassTask", "num_classes": 3},
        reader={**READER, **changes},
    )
    cfg = domains.load("tones_table", extra=[mine])
    x, y = _all(load_split("tones_table", "train", tmp_path, tmp_path / "cache", cfg=cfg))
    test_x, test_y = _all(load_split("tones_table", "test", tmp_path, tmp_path / "cache", cfg=cfg))
    assert x.shape == (9, 1, 40, 50) and test_x.shape == (4, 1, 40, 50)
    assert AudioFiles.from_mapping(
        {**READER, "audio_root": str(mine / "clips"), **changes, "table": str(mine / "labels.csv")}
    ).shape == (1, 40, 50)
    assert y.tolist() == [1] * 3 + [2] * 3 + [0] * 3 and test_y.tolist() == [1, 2, 0, 2]  # table order
    assert _tone_order_follows_labels(torch.cat([x, test_x[:3]]), torch.cat([y, test_y[:3]]), sorted(TONES))
    # channels are averaged: the stereo clip holds both tones, one from each channel
    both = test_x[3, 0].mean(dim=-1)
    loud = set(both.topk(2).indices.tolist())
    low_band = int(test_x[0, 0].mean(dim=-1).argmax())
    high_band = int(test_x[2, 0].mean(dim=-1).argmax())
    assert {low_band, high_band} <= {b + d for b in loud for d in (-1, 0, 1)}, (loud, low_band, high_band)
    wave, rate = read_mono(mine / "clips" / "both.flac")
    stereo, _ = sf.read(mine / "clips" / "both.flac", dtype="float32")
    assert rate == 44100 and np.allclose(wave, stereo.mean(axis=1), atol=1e-6)


@pytest.mark.parametrize(
    "label_type, table, expected",
    [
        (
            "multilabel",
            "path\ttags\na.wav\tbird|wind\nb.wav\twind\nc.wav\tbird\nd.wav\t\n",
            [[1, 1], [0, 1], [1, 0], [0, 0]],
        ),  # classes sorted: bird, wind
        ("score", "path\ttags\na.wav\t0.5\nb.wav\t1.5\nc.wav\t-2\nd.wav\t3\n", [0.5, 1.5, -2.0, 3.0]),
    ],
)
def test_multilabel_and_score_labels_from_a_table_with_file_splits(tmp_path, label_type, table, expected):
    rng = np.random.default_rng(1)
    for name in "abcd":
        sf.write(tmp_path / f"{name}.wav", _tone(440, 16000, 0.2, rng), 16000)
    (tmp_path / "train.tsv").write_text(table[: table.index("d.wav")])
    (tmp_path / "test.tsv").write_text(table.splitlines()[0] + "\n" + table[table.index("d.wav") :])
    settings = {
        "split_by": "files",
        "train": str(tmp_path / "train.tsv"),
        "test": str(tmp_path / "test.tsv"),
        "label_type": label_type,
        "label_column": "tags",
        "clip_seconds": 0.2,
        "mean": -30.0,
        "std": 20.0,
    }
    train = audio_files("train", tmp_path / "cache", **settings)
    test = audio_files("test", tmp_path / "cache", **settings)
    x, y = _all(train)
    assert x.shape == (3, 1, 64, 12)  # round(0.2 * 16000) // 250 = 12
    assert torch.cat([y, _all(test)[1]]).tolist() == expected


def test_resampling_makes_the_same_tone_at_8_and_16_khz_alike(tmp_path):
    rows = ["path,split"]
    for name, freq, rate in (("a8k", 700, 8000), ("a16k", 700, 16000), ("b16k", 1400, 16000), ("c", 700, 16000)):
        t = np.arange(rate // 2) / rate
        sf.write(tmp_path / f"{name}.wav", (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)
        rows.append(f"{name}.wav,{'test' if name == 'c' else 'train'}")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    x, _ = _all(
        audio_files(
            "train",
            tmp_path / "cache",
            table=str(tmp_path / "t.csv"),
            label_type="none",
            split_by="column",
            split_column="split",
            clip_seconds=0.5,
            mean=0.0,
            std=1.0,
        )
    )
    same = float((x[0] - x[1]).abs().mean())
    other = float((x[2] - x[1]).abs().mean())
    assert same < 0.5 and other > 10 * same, (same, other)  # in dB; a spectrogram spans ~100 dB
    # and not merely equal to the 16 kHz clip by accident: the 8 kHz file really was resampled
    assert sf.info(str(tmp_path / "a8k.wav")).samplerate == 8000


@pytest.mark.parametrize(
    "change, message",
    [
        ({"clip_secs": 1.0}, "reader.clip_secs: is not a key of audio_files; valid keys: split_by"),
        ({"n_mels": "many"}, "reader.n_mels: must be of type int, got 'many'"),
        ({"audio_root": "nope"}, "reader.audio_root: file or folder"),
        ({"audio_root": "labels.csv"}, "reader.audio_root: must be a folder"),
        ({"audio_root": "clips/low"}, "reader.audio_root: folder"),  # no class subfolders
        ({"table": "labels.csv", "label_column": "kind"}, "reader.label_column: column 'kind' is not in"),
        (
            {"table": "labels.csv", "label_column": "sound", "path_column": "wav"},
            "reader.path_column: column 'wav' is not in",
        ),
        ({"table": "clips", "label_column": "sound"}, "reader.table: must be a table file"),
        ({"split_by": "column", "split_column": "split"}, "reader.table: is needed with split_by: column"),
        ({"label_type": "score"}, "reader.table: must be a table with label_type: score"),
        ({"split_by": "files"}, "reader.train: is needed with split_by: files"),
        ({"n_mels": 300}, "reader.n_mels: must be at most n_fft // 2 + 1 = 257"),
        ({"hop_length": 9000}, "reader.hop_length: must be at most clip_seconds * sample_rate = 8000"),
        ({"clip_seconds": 0}, "reader.clip_seconds: must be positive"),
        ({"mean": -20.0}, "reader.std: is needed too"),
    ],
)
def test_schema_mistakes_name_the_file_the_key_and_what_is_expected(tmp_path, change, message):
    mine = tmp_path / "mine"
    _clips(mine)
    path = _yamls(mine, **change)
    with pytest.raises(DomainConfigError) as err:
        domains.load("my_sounds_tone", extra=[mine])
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_a_truncated_wav_stops_the_run_or_is_skipped(tmp_path):
    from dabs_rq.data.datamodule import DomainDataModule

    mine = tmp_path / "mine"
    _clips(mine)
    bad = mine / "clips" / "low" / "low_2.wav"  # a train clip; clips of another class follow it
    bad.write_bytes(bad.read_bytes()[:3000])  # its header still promises the whole clip
    _yamls(mine)
    cfg = domains.load("my_sounds_tone", extra=[mine])
    with pytest.raises(CorruptDataError, match="low_2.wav") as err:
        DomainDataModule(cfg, tmp_path / "c1").split("train")
    assert "truncated WAV" in str(err.value)
    skipping = DomainDataModule(cfg, tmp_path / "c2", on_corrupt="skip")
    x, y = _all(skipping.split("train"))
    test_x, test_y = _all(skipping.split("test"))
    assert len(x) + len(test_x) == 11
    # the split is drawn before skipping and no label moves to another clip
    assert _tone_order_follows_labels(torch.cat([x, test_x]), torch.cat([y, test_y]), sorted(TONES))


def test_a_patch_embedding_that_cannot_take_the_spectrograms_is_named(tmp_path):
    mine = tmp_path / "mine"
    _clips(mine)
    path = _yamls(mine, hop_length=125)  # 64 frames per clip now, the YAML's image_size says 32
    with pytest.raises(DomainConfigError) as err:
        domains.load("my_sounds_tone", extra=[mine])
    assert str(err.value).startswith(f"{path}: inputs[0].image_size: is [32, 32] but the reader makes [32, 64]")
