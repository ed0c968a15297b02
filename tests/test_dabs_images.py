"""The natural-image datasets of DABS, read from tiny fixtures in their real on-disk formats.

Everything goes through the user path: ``domains.load(name)`` -> ``DomainDataModule`` ->
``split(...)`` (and ``dabs_rq.run.run`` for one tiny pretrain + transfer job).
"""

from __future__ import annotations

import glob
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from scipy.io import loadmat
from torchvision import transforms

from dabs_rq.data import domains
from dabs_rq.data.datamodule import DomainDataModule
from dabs_rq.data.readers import images as image_readers
from dabs_rq.run import run
from tests import image_fixtures as fx
from tests.conftest import compose_config, load_split, missing_dataset, pipeline_overrides

NAMES = list(fx.WRITERS)
TRANSFER = ["cifar10", "cu_birds", "vgg_flower", "dtd", "traffic_sign", "aircraft"]
HEADS = {"cifar10": 10, "cu_birds": 200, "vgg_flower": 102, "dtd": 47, "traffic_sign": 43, "aircraft": 102}


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> tuple[Path, dict]:
    """All seven fixture datasets under one data root, and their expected split sizes."""
    root = tmp_path_factory.mktemp("dabs_images")
    return root, fx.write_all(root)


def everything(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole split as one batch (the datasets support batch indexing)."""
    (images,), labels = dataset[list(range(len(dataset)))]
    return images, labels


def codes(images: torch.Tensor) -> list[tuple[int, int]]:
    """(label, instance) read back from the solid colours of the fixture images."""
    centre = images[:, :, 56:168, 56:168].mean(dim=(2, 3)) * 255
    return [(fx.decode(r), fx.decode(g)) for r, g in centre[:, :2].tolist()]


@pytest.mark.parametrize("name", NAMES)
def test_split_sizes_shapes_range_and_labels_match_the_files(name, image_root, data_cache):
    root, expected = image_root
    seen = {}
    for split in ("train", "test"):
        dataset = load_split(name, split, root, data_cache)
        assert getattr(dataset, "supports_batch_indexing", False)
        assert len(dataset) == expected[name][split]
        (image,), label = dataset[0]
        assert image.shape == (3, 224, 224) and image.dtype == torch.float32
        images, labels = everything(dataset)
        assert images.shape == (len(dataset), 3, 224, 224)
        assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
        assert labels.dtype == torch.int64 and 0 <= int(labels.min()) and int(labels.max()) < expected[name]["classes"]
        found = codes(images)
        if name != "imagenet":  # one greyscale ImageNet image carries only the label
            assert [c for c, _ in found] == labels.tolist(), "each image must carry its own label"
        seen[split] = set(found)
    if name != "imagenet":
        assert not seen["train"] & seen["test"], "no image may be in both splits"


@pytest.mark.parametrize("name", TRANSFER)
def test_head_sizes_follow_dabs(name):
    cfg = domains.load(name)
    assert instantiate(cfg.task).num_outputs == HEADS[name]
    assert cfg.paper_name and cfg.domain == "Images"


def dabs_per_class_split(groups: list[list], train: bool) -> list:
    """DABS's loop (vgg_flower.py / traffic_sign.py), written out as the reference."""
    rs = np.random.RandomState(42)
    picked = []
    for items in groups:
        indexer = np.arange(len(items))
        rs.shuffle(indexer)
        items = np.array(items)[indexer].tolist()
        picked += items[: int(0.8 * len(items))] if train else items[int(0.8 * len(items)) :]
    return picked


def test_flowers_split_is_dabs_per_class_split_in_first_appearance_order(image_root, data_cache):
    root, _ = image_root
    labels = loadmat(root / "vgg_flower" / "imagelabels.mat")["labels"][0]
    by_class: dict[int, list] = {}
    for image_id, label in enumerate(labels, start=1):
        k = sum(1 for other in labels[: image_id - 1] if other == label)
        by_class.setdefault(int(label), []).append((int(label) - 1, k))
    for split in ("train", "test"):
        expected = [tuple(c) for c in dabs_per_class_split(list(by_class.values()), split == "train")]
        assert codes(everything(load_split("vgg_flower", split, root, data_cache))[0]) == expected


def test_gtsrb_split_shuffles_sorted_files_or_the_filesystem_order(image_root, data_cache):
    root, _ = image_root
    images = root / "traffic_sign" / "GTSRB" / "Final_Training" / "Images"

    def instance(path: str) -> int:
        track, index = Path(path).stem.split("_")
        return 3 * int(track) + int(index)

    for sort in (True, False):
        cfg = domains.load("traffic_sign")
        cfg.reader_options.gtsrb_sorted_files = sort
        listing = [glob.glob(str(images / f"{c:05d}" / "*.ppm")) for c in range(3)]
        groups = [[(c, instance(p)) for p in (sorted(files) if sort else files)] for c, files in enumerate(listing)]
        for split in ("train", "test"):
            expected = [tuple(c) for c in dabs_per_class_split(groups, split == "train")]
            assert codes(everything(load_split("traffic_sign", split, root, data_cache, cfg))[0]) == expected


def test_aircraft_labels_follow_sorted_variants_and_the_bbox_crop_is_a_quirk(image_root, data_cache):
    root, _ = image_root
    images, labels = everything(load_split("aircraft", "train", root, data_cache))
    names = sorted(fx.AIRCRAFT_VARIANTS)
    assert [names[y] for y in labels.tolist()] == [v for v in fx.AIRCRAFT_VARIANTS for _ in range(2)]
    assert float(images.std(dim=(2, 3)).max()) < 0.02, "cropped to the box: one solid colour"
    cfg = domains.load("aircraft")
    cfg.reader_options.aircraft_bbox_crop = False
    whole, _ = everything(load_split("aircraft", "train", root, data_cache, cfg))
    assert float(whole.std(dim=(1, 2, 3)).min()) > 0.1, "uncropped: the black surround is kept"
    cfg.reader_options.aircraft_head_outputs = 100
    assert instantiate(cfg.task).num_outputs == 100  # the head follows the quirk value


def test_on_the_fly_decoding_gives_the_cached_items(image_root, data_cache):
    root, _ = image_root
    cfg = domains.load("imagenet")
    cached = load_split("imagenet", "test", root, data_cache)
    cfg.reader.memmap = False
    data = DomainDataModule(cfg, cache_dir=data_cache, data_root=root)
    lazy = data.split("test")
    for i in range(len(cached)):
        (a,), ya = cached[i]
        (b,), yb = lazy[i]
        assert torch.equal(a, b) and int(ya) == int(yb)
    (again,), _ = pickle.loads(pickle.dumps(lazy))[0]  # can go to loader worker processes
    assert torch.equal(again, cached[0][0][0])
    (images,), labels = next(iter(data.test_dataloader()))  # collated per sample
    assert images.shape == (4, 3, 224, 224) and labels.tolist() == [0, 0, 1, 1]


def test_preprocessing_is_bit_identical_to_dabs_resize_centercrop_totensor(tmp_path):
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    dabs = transforms.Compose([transforms.Resize((224, 224)), transforms.CenterCrop(224), transforms.ToTensor()])
    dataset = image_readers.image_dataset("noise", "train", lambda i: photo, [0], tmp_path, source="noise")
    (ours,), _ = dataset[0]
    assert torch.equal(ours, dabs(photo))


@pytest.mark.parametrize("name", ["cifar10", "vgg_flower", "dtd", "traffic_sign", "aircraft"])
def test_download_true_does_not_refetch_data_already_on_disk(name, image_root, data_cache):
    root, expected = image_root
    data = DomainDataModule(domains.load(name), cache_dir=data_cache, data_root=root, download=True)
    assert len(data.split("test")) == expected[name]["test"]  # no network here: a fetch would fail


@pytest.mark.parametrize("name", NAMES)
def test_missing_dataset_says_how_to_get_it(name, tmp_path):
    cfg = domains.load(name)
    with missing_dataset(name) as err:
        load_split(name, "train", tmp_path, tmp_path / "cache")
    message = str(err.value)
    assert str(cfg.data.source) in message
    if cfg.data.download == "auto":
        assert "download=true" in message
    else:
        assert "download it by hand" in message and str(cfg.data.manual_steps).strip() in message


def test_tiny_imagenet_pretraining_then_transfer_to_every_image_set(image_root, tmp_path, data_cache):
    root, expected = image_root
    records = run(
        compose_config(pipeline_overrides(root, tmp_path, data_cache, domain="imagenet", algorithm="rq", batch_size=4))
    )
    assert [r["dataset"] for r in records] == TRANSFER
    for name in TRANSFER:
        stored = json.loads((tmp_path / f"results/records/default/{name}/rq/seed0.json").read_text())
        assert stored["pretraining"]["steps"] == 2 and stored["pretrain_dataset"] == "imagenet"
        assert stored["protocol"]["n_train"] == expected[name]["train"]
        assert stored["protocol"]["task"]["num_outputs"] == HEADS[name]
        assert 0 <= stored["value"] <= 100
    aircraft = json.loads((tmp_path / "results/records/default/aircraft/rq/seed0.json").read_text())
    assert aircraft["reader_options"] == {"aircraft_bbox_crop": True, "aircraft_head_outputs": 102}
