"""PAMAP2 (DABS sensor domain) read from a tiny copy in the real .dat format, through the user path."""

import zipfile

import pytest
import torch
from omegaconf import OmegaConf

from dabs_rq.data import domains
from dabs_rq.data.readers import pamap2 as reader
from dabs_rq.paths import DOMAINS_DIR
from dabs_rq.run import run
from tests.conftest import compose_config, fixture_root, load_split, missing_dataset, pipeline_overrides
from tests.dabs_fixtures import serve_folder, write_pamap2

TRAIN_SUBJECTS = {101, 102, 103, 104, 107, 108, 109}
HAND_TEMPERATURE, CHEST_TEMPERATURE, HEART_RATE = 1, 18, 0  # channels the fixture makes checkable


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return fixture_root(tmp_path_factory, write_pamap2)


def test_windows_have_dabs_shape_labels_and_subject_split(data_root, data_cache):
    train, test = (load_split("pamap2_transfer", s, data_root, data_cache) for s in ("train", "test"))
    assert (len(train), len(test)) == (50_000, 10_000)
    for dataset, subjects in ((train, TRAIN_SUBJECTS), (test, {105})):
        (x,), y = dataset[list(range(0, len(dataset), 37))]
        assert x.shape == (len(y), 320, 52) and x.dtype == torch.float32 and y.dtype == torch.long
        assert torch.isfinite(x).all()  # NaNs interpolated
        assert set(y.tolist()) == set(range(11))  # class-balanced draw over the 11 activities
        activity = torch.tensor(reader.ACTIVITIES)[y]
        assert torch.equal(x[:, :, HAND_TEMPERATURE], activity[:, None].float().expand(-1, 320))
        assert set(x[:, :, CHEST_TEMPERATURE].unique().int().tolist()) == subjects
        assert torch.allclose(x[:, 1:, HEART_RATE] - x[:, :-1, HEART_RATE], torch.tensor(0.5))  # linear fill
    (x,), y = train[7]
    assert x.shape == (320, 52) and y.shape == ()


def test_pretraining_pool_and_windows_are_reproducible(data_root, data_cache, tmp_path):
    pretrain = load_split("pamap2", "train", data_root, data_cache)
    assert len(pretrain) == 1_000_000  # a larger pool than an epoch: DABS draws fresh windows every step
    idx = list(range(0, len(pretrain), 9973))
    (x,), y = pretrain[idx]
    assert set(x[:, :, CHEST_TEMPERATURE].unique().int().tolist()) == TRAIN_SUBJECTS
    assert torch.bincount(y).min() > len(idx) / 11 / 2  # class-balanced
    fresh = load_split("pamap2", "train", data_root, tmp_path / "fresh_cache")
    assert torch.equal(fresh[idx][0][0], x) and torch.equal(fresh[idx][1], y)


def test_grid_quirk_enumerates_every_window(data_root, data_cache):
    kwargs = dict(cache_dir=data_cache, root=data_root / "pamap2", windows="grid", grid_stride=8)
    train, test = reader.pamap2("train", **kwargs), reader.pamap2("test", **kwargs)
    per_run = len(range(0, 340 - 320, 8))  # the fixture has 340 rows of each activity per subject
    assert (len(train), len(test)) == (7 * 11 * per_run, 11 * per_run)
    (x,), y = test[list(range(len(test)))]
    assert torch.equal(x[:, 0, HAND_TEMPERATURE], torch.tensor(reader.ACTIVITIES)[y].float())
    assert torch.bincount(y).tolist() == [per_run] * 11


def test_missing_data_says_how_to_get_it(tmp_path):
    with missing_dataset("pamap2", "download=true.*uci.edu"):
        load_split("pamap2", "train", tmp_path, tmp_path / "cache")


def test_download_unpacks_the_uci_archive(data_root, tmp_path):
    inner = tmp_path / "PAMAP2_Dataset.zip"
    with zipfile.ZipFile(inner, "w") as z:
        for path in sorted((data_root / "pamap2").rglob("*.dat")):
            z.write(path, path.relative_to(data_root / "pamap2"))
    served = tmp_path / "served"
    served.mkdir()
    outer = served / "pamap2+physical+activity+monitoring.zip"  # UCI's current wrapper around the zip
    with zipfile.ZipFile(outer, "w") as z:
        z.write(inner, inner.name)
    root = tmp_path / "data" / "pamap2"
    with serve_folder(served) as url:
        dataset = reader.pamap2(
            "test", cache_dir=tmp_path / "cache", root=root, download=True, url=f"{url}/{outer.name}", test_windows=4
        )
    assert len(dataset) == 4 and (root / "PAMAP2_Dataset" / "Protocol" / "subject105.dat").is_file()
    assert not list(root.glob("*.zip"))


def test_tiny_pretrain_and_transfer_run(data_root, data_cache, tmp_path, monkeypatch):
    # The real YAMLs with fewer windows (DABS's 60,000 take half a minute through the encoder on 2 cores).
    folder = tmp_path / "domains"
    folder.mkdir()
    for name in ("pamap2", "pamap2_transfer"):
        cfg = OmegaConf.load(DOMAINS_DIR / f"{name}.yaml")
        cfg.reader.update(train_windows=512, test_windows=256)
        OmegaConf.save(cfg, folder / f"{name}.yaml")
    monkeypatch.setattr(domains, "DOMAINS_DIR", folder)
    (record,) = run(
        compose_config(
            pipeline_overrides(data_root, tmp_path, data_cache, domain="pamap2", algorithm="emix", batch_size=16)
        )
    )
    assert record["dataset"] == "pamap2_transfer" and record["paper_name"] == "PAMAP2"
    assert record["domain"] == "Sensor" and record["metric"] == "accuracy" and 0 <= record["value"] <= 100
    assert record["reader_options"] == {"windows": "seeded", "window_seed": 0}
    assert (record["protocol"]["n_train"], record["protocol"]["n_test"]) == (512, 256)
    assert record["protocol"]["task"]["num_outputs"] == 12
    assert record["pretraining"]["steps"] == 2
