"""CheXpert and ChestX-ray8 (DABS chest X-ray domain) read from tiny copies in their real layouts."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision import transforms

from dabs_rq.data.readers import xray as reader
from dabs_rq.run import run
from tests.conftest import compose_config, dabs_reference, fixture_root, load_split, missing_dataset, pipeline_overrides
from tests.dabs_fixtures import write_chexpert, write_xray8


def dabs_image(path) -> torch.Tensor:
    """DABS's X-ray transform, applied the way DABS does (on the RGB image, to float)."""
    return dabs_reference(path, transforms.Resize((224, 224)))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return fixture_root(tmp_path_factory, write_chexpert, write_xray8)


def test_chexpert_images_match_dabs_and_labels_are_u_zeros(data_root, data_cache):
    base = data_root / "chexpert"
    for split, csv in (("train", "train.csv"), ("test", "valid.csv")):
        table = pd.read_csv(base / "CheXpert-v1.0-small" / csv)
        dataset = load_split("chexpert_transfer", split, data_root, data_cache)
        (x,), y = dataset[list(range(len(dataset)))]
        assert len(dataset) == len(table) and x.shape == (len(table), 3, 224, 224) and x.dtype == torch.float32
        assert 0 <= x.min() and x.max() <= 1 and y.dtype == torch.long
        expected = torch.tensor((table[list(reader.CHEXPERT_TASKS)] == 1.0).to_numpy(np.int64))  # -1 and blank: 0
        assert torch.equal(y, expected)
        for i in (0, len(table) - 1):
            assert torch.equal(x[i], dabs_image(base / table["Path"][i]))
    pretrain = load_split("chexpert", "train", data_root, data_cache)
    transfer = load_split("chexpert_transfer", "train", data_root, data_cache)
    assert torch.equal(pretrain[[0, 5]][0][0], transfer[[0, 5]][0][0])


def test_parallel_decoding_gives_the_same_cache(data_root, data_cache, tmp_path):
    kwargs = dict(root=data_root / "chexpert")
    parallel = reader.chexpert("test", cache_dir=tmp_path / "cache", decode_workers=2, **kwargs)
    serial = load_split("chexpert_transfer", "test", data_root, data_cache)
    assert np.array_equal(parallel.images, serial.images) and parallel.images.shape == (8, 1, 224, 224)


def _xray8_expected(data_root, listing):
    """DABS's split, re-derived: RandomState(42) shuffle, first int(0.9 n) train; labels by substring."""
    names = np.array([n for n in listing if n.endswith(".png")])
    np.random.RandomState(42).shuffle(names)
    cut = int(len(names) * 0.9)
    meta = pd.read_csv(data_root / "xray8" / "metadata.csv").set_index("Image Index")["Finding Labels"]
    labels = {n: [int(p in meta[n]) for p in reader.XRAY8_PATHOLOGIES] for n in names}
    return {"train": list(names[:cut]), "test": list(names[cut:])}, labels


def test_xray8_split_images_and_labels_follow_dabs(data_root, data_cache):
    images = data_root / "xray8" / "images"
    splits, labels = _xray8_expected(data_root, sorted(p.name for p in images.iterdir()))
    assert (len(splits["train"]), len(splits["test"])) == (36, 4)
    for split, names in splits.items():
        dataset = load_split("xray8", split, data_root, data_cache)
        (x,), y = dataset[list(range(len(dataset)))]
        assert len(dataset) == len(names) and x.shape == (len(names), 3, 224, 224)
        assert y.tolist() == [labels[n] for n in names]
        for i, name in enumerate(names):
            assert torch.equal(x[i], dabs_image(images / name)), name  # includes one RGBA file
    assert "00000004_000.png" in splits["train"] + splits["test"]


def test_xray8_sort_files_quirk(data_root, data_cache, monkeypatch):
    listing = sorted(p.name for p in (data_root / "xray8" / "images").iterdir())[::-1]  # another filesystem order
    monkeypatch.setattr(reader.os, "listdir", lambda path: list(listing))
    kwargs = dict(cache_dir=data_cache, root=data_root / "xray8")
    sorted_split = reader.chestxray8("test", **kwargs)
    assert torch.equal(sorted_split.labels, load_split("xray8", "test", data_root, data_cache).labels)
    splits, labels = _xray8_expected(data_root, listing)
    dabs_order = reader.chestxray8("test", sort_files=False, **kwargs)
    assert dabs_order.labels.tolist() == [labels[n] for n in splits["test"]]


def test_xray8_images_missing_from_metadata_are_reported(data_root, tmp_path):
    root = tmp_path / "xray8"
    (root / "images").mkdir(parents=True)
    Image.new("L", (8, 8)).save(root / "images" / "99999999_000.png")
    (root / "metadata.csv").write_text("Image Index,Finding Labels\n00000001_000.png,Mass\n")
    with pytest.raises(ValueError, match="1 images of .* are not in metadata.csv .*99999999_000.png"):
        reader.chestxray8("test", cache_dir=tmp_path / "cache", root=root)  # int(1 * 0.9) = 0 train images


@pytest.mark.parametrize(
    "name,hint",
    [
        ("chexpert", "stanfordmlgroup.*register"),
        ("chexpert_transfer", "CheXpert-v1.0-small.zip"),
        ("xray8", "nihcc.*metadata.csv"),
    ],
)
def test_missing_data_says_how_to_get_it_by_hand(name, hint, tmp_path):
    with missing_dataset(name, f"download it by hand.*{hint}"):
        load_split(name, "train", tmp_path, tmp_path / "cache")


def test_tiny_pretrain_and_transfer_run(data_root, data_cache, tmp_path):
    records = run(
        compose_config(
            pipeline_overrides(data_root, tmp_path, data_cache, domain="chexpert", algorithm="emix", batch_size=8)
        )
    )
    assert [r["dataset"] for r in records] == ["chexpert_transfer", "xray8"]
    assert [r["paper_name"] for r in records] == ["CheXpert", "ChestX-ray8"]
    for record, labels in zip(records, (5, 8)):
        assert record["domain"] == "Chest X-Rays" and record["metric"] == "auroc" and 0 <= record["value"] <= 100
        assert record["protocol"]["task"]["num_outputs"] == labels
    assert records[1]["reader_options"] == {"sort_files": True}
    assert (records[1]["protocol"]["n_train"], records[1]["protocol"]["n_test"]) == (36, 4)
