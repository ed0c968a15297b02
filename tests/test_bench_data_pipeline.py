"""The data-pipeline benchmark (``dabs-rq bench --only data_pipeline``): its fixtures are the real formats the
DABS readers read, its quick run goes through every code path, and it counts every sample."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from PIL import Image

from benchmarks import data_pipeline as dp
from dabs_rq.bench import main
from dabs_rq.cores import usable_cores

QUICK_FILES = {"imagenet": 2 * 64 + 5, "librispeech": 2 * 64 + 3}


def test_imagenet_fixture_is_photo_sized_jpegs_in_wnid_folders(tmp_path):
    info = dp.write_imagenet(tmp_path, n_train=6, n_val=2, classes=3)
    train = sorted((tmp_path / "train").glob("n*/*.JPEG"))
    assert len(train) == 6 and len(list((tmp_path / "val").glob("n*/ILSVRC2012_val_*.JPEG"))) == 2
    assert len({p.parent.name for p in train}) == 3
    for path in train:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB" and image.size in dp.PHOTO_SIZES
    assert 40_000 < info["bytes"] / 8 < 250_000  # about an ImageNet photo's size, not a solid-colour tile


def test_librispeech_fixture_is_read_by_torchaudio_as_librispeech(tmp_path):
    info = dp.write_librispeech(tmp_path, n_train=10, n_dev=2)
    subsets = {"train-clean-100": 1, "train-clean-360": 3, "train-other-500": 6, "dev-clean": 2}
    for subset, count in subsets.items():
        listed = torchaudio.datasets.LIBRISPEECH(tmp_path, url=subset, folder_in_archive="LibriSpeech")
        assert len(listed) == count
        path, rate, transcript, *_ = listed.get_metadata(0)
        assert rate == dp.SAMPLE_RATE and transcript.startswith("WORDS")
        assert sf.info(str(tmp_path / "LibriSpeech" / path)).format == "FLAC"
    assert 0 < info["long"] <= 10  # most clips are longer than the DABS window, as LibriSpeech's are


def test_utterance_lengths_are_librispeech_like():
    seconds = dp.utterance_lengths(2000, seed=0) / dp.SAMPLE_RATE
    assert 12 < seconds.mean() < 13.5 and seconds.min() >= 1.5 and seconds.max() <= 24.5


class _Loader:
    """A stand-in loader whose epochs deliver ``sizes`` batches of [n, 1, 2, 2] inputs."""

    def __init__(self, sizes):
        self.sizes, self.epochs = sizes, []
        self.sampler = self

    def set_epoch(self, epoch):
        self.epochs.append(epoch)

    def __iter__(self):
        return iter(((torch.zeros(n, 1, 2, 2),), torch.zeros(n)) for n in self.sizes)


def test_counted_epoch_counts_and_stops_on_a_lost_sample():
    loader = _Loader([64, 64])
    assert dp.counted_epoch(loader, 3, (1, 2, 2), 128, "x") == 128 and loader.epochs == [3]
    with pytest.raises(RuntimeError, match="delivered 127 samples, expected 128"):
        dp.counted_epoch(_Loader([64, 63]), 1, (1, 2, 2), 128, "x")
    with pytest.raises(RuntimeError, match="expected"):  # a batch of the wrong shape is not counted
        dp.counted_epoch(_Loader([64]), 1, (3, 2, 2), 64, "x")


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert main(["--only", "data_pipeline", "--quick", "--out", str(out)]) == 0
    return json.loads((out / "data_pipeline-cpu-quick.json").read_text()), (out / "README.md").read_text()


@pytest.mark.slow
def test_quick_run_measures_both_domains_and_modes(quick_result):
    payload, summary = quick_result
    rows = payload["rows"]
    assert payload["benchmark"] == "data_pipeline" and payload["quick"] and payload["machine"]["cpus"]
    assert payload["columns"] == list(dp.COLUMNS) and all(list(row) == sorted(dp.COLUMNS) for row in rows)
    kinds = {(r["domain"], r["mode"], r["stage"].split(" (")[0], r["workers"]) for r in rows}
    assert kinds == {
        ("imagenet", "memmap cache", "cache build", usable_cores()),
        ("imagenet", "memmap cache", "loader", 0),
        ("imagenet", "memmap cache", "loader", 4),  # domains/imagenet.yaml's num_workers
        ("imagenet", "decode on the fly", "loader", 0),
        ("imagenet", "decode on the fly", "loader", 4),
        ("librispeech", "memmap cache", "cache build", usable_cores()),
        ("librispeech", "memmap cache", "loader", 0),
        ("librispeech", "memmap cache", "loader", 4),
    }
    assert "## Data pipeline throughput (real DABS formats) — cpu (quick)" in summary
    assert "\n| domain " in summary  # the benchmark's column order, not the JSON's sorted keys


@pytest.mark.slow
def test_quick_run_counts_every_sample(quick_result):
    for row in quick_result[0]["rows"]:
        files = QUICK_FILES[row["domain"]]
        assert row["files"] == files and row["samples/s"] > 0
        if row["stage"].startswith("cache build"):
            assert row["samples"] == files and row["full set h"] > 0
            continue
        assert row["batch"] == 64 and row["per epoch"] == files - files % 64  # only drop_last's remainder
        assert row["epochs"] >= 1 and row["samples"] == row["epochs"] * row["per epoch"]
        assert np.isclose(row["batches/s"], row["samples/s"] / 64, rtol=0.01, atol=0.01)
        assert np.isclose(row["steps/s @64"], row["samples/s"] / 64, rtol=0.01, atol=0.01)
        target = dp.TARGET_SAMPLES_PER_S if row["workers"] else dp.SERIAL_TARGET_SAMPLES_PER_S
        assert row["met"] == (row["samples/s"] >= target) and f"{target:,.0f}" in row["target"]
        assert row["cores for 3,158/s"] >= 1
