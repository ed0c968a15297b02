"""Preprocessed caches cannot go stale: each is keyed by the resolved data root and its source files.

Every case reads a tiny copy of a dataset (real on-disk format) into a cache, then a second copy
with other contents, or the same copy with a file replaced, through the SAME cache, and checks
that the new data comes back: exactly what a fresh cache gives, not the first copy's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dabs_rq.data.array_cache import SMALL_TABLE_BYTES, source_identity
from dabs_rq.data.readers import pamap2, vqa
from dabs_rq.data.storage import CorruptDataError
from tests.conftest import load_split
from tests.dabs_fixtures import COCO_CATEGORY_IDS, write_chexpert, write_mscoco, write_pamap2, write_vqa, write_xray8
from tests.tokenizer_fixtures import write_bert_tokenizer


def _retell_coco(root: Path) -> None:
    """Copy B of MS-COCO: other captions and other categories than :func:`write_mscoco` gives."""
    for part in ("train2017", "val2017"):
        captions = root / "mscoco" / "annotations" / f"captions_{part}.json"
        data = json.loads(captions.read_text())
        for c in data["annotations"]:
            c["caption"] = "two red buses"
        captions.write_text(json.dumps(data))
        instances = root / "mscoco" / "annotations" / f"instances_{part}.json"
        data = json.loads(instances.read_text())
        for a in data["annotations"]:
            a["category_id"] = COCO_CATEGORY_IDS[50]
        instances.write_text(json.dumps(data))


def _reask_vqa(root: Path) -> None:
    """Copy B of VQA: other question texts."""
    for part in ("train2014", "val2014"):
        path = root / "vqa" / f"MultipleChoice_mscoco_{part}_questions.json"
        data = json.loads(path.read_text())
        for q in data["questions"]:
            q["question"] = "how many buses are there"
        path.write_text(json.dumps(data))


def _mscoco_b(root: Path) -> None:
    write_mscoco(root, seed=1)
    _retell_coco(root)


def _vqa_b(root: Path) -> None:
    write_vqa(root, seed=1)
    _reask_vqa(root)


#: domain -> (writer of copy A, writer of copy B, which parts of an item (inputs..., label) copy B changes)
CASES: dict[str, tuple[Callable, Callable, tuple[int, ...]]] = {
    "pamap2_transfer": (write_pamap2, lambda root: write_pamap2(root, seed=1), (0,)),
    "mscoco": (write_mscoco, _mscoco_b, (0, 1, 2)),
    "vqa": (write_vqa, _vqa_b, (0, 1)),
    # X-ray labels come from the CSV on every read (only images are cached); the test split's are fixed
    "chexpert_transfer": (write_chexpert, lambda root: write_chexpert(root, seed=1), (0,)),
    "xray8": (write_xray8, lambda root: write_xray8(root, seed=1), (0,)),
}


def snapshot(dataset) -> list[torch.Tensor]:
    """Every input and the labels of (up to 500 evenly spaced) items, as ``[*inputs, labels]``."""
    index = np.linspace(0, len(dataset) - 1, num=min(len(dataset), 500)).astype(int).tolist()
    inputs, labels = dataset[index]
    return [x.clone() for x in inputs] + [labels.clone()]


def assert_same(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape and torch.equal(a, b), f"part {k} differs from a fresh read"


def copy_root(tmp_path: Path, name: str, write: Callable[[Path], object]) -> Path:
    root = tmp_path / name
    write(root)
    write_bert_tokenizer(root)
    return root


@pytest.mark.parametrize("domain", list(CASES))
def test_a_second_copy_at_another_data_root_gives_its_own_data(domain, tmp_path):
    write_a, write_b, changed = CASES[domain]
    a, b = copy_root(tmp_path, "copy_a", write_a), copy_root(tmp_path, "copy_b", write_b)
    cache = tmp_path / "cache"
    for split in ("train", "test"):
        from_a = snapshot(load_split(domain, split, a, cache))
        from_b = snapshot(load_split(domain, split, b, cache))  # the same cache dir
        assert_same(from_b, snapshot(load_split(domain, split, b, tmp_path / "fresh")))
        for k in changed:  # the copies really differ there, so a stale cache would have been caught
            assert from_a[k].shape != from_b[k].shape or not torch.equal(from_a[k], from_b[k]), (split, k)
        assert_same(snapshot(load_split(domain, split, a, cache)), from_a)  # and copy A still reads as A


def test_a_symlinked_data_root_shares_the_cache_of_its_target(tmp_path):
    a = copy_root(tmp_path, "copy_a", write_xray8)
    (tmp_path / "link").symlink_to(a, target_is_directory=True)
    cache = tmp_path / "cache"
    load_split("xray8", "train", a, cache)
    built = sorted(cache.rglob("*.npy"))
    load_split("xray8", "train", tmp_path / "link", cache)
    assert sorted(cache.rglob("*.npy")) == built  # same resolved root, same files: nothing rebuilt


def test_a_recording_replaced_in_place_rebuilds_the_pamap2_rows(tmp_path):
    root = copy_root(tmp_path, "data", write_pamap2)
    cache = tmp_path / "cache"
    before = pamap2.pamap2("train", cache, root / "pamap2", windows="grid")
    path = pamap2.protocol_dir(root / "pamap2") / "subject101.dat"
    assert path.stat().st_size >= SMALL_TABLE_BYTES  # keyed by size and mtime, not by contents
    old = path.stat()
    text = path.read_text()
    first = text.split("\n")[20].split()  # a row of the first activity: its hand temperature is 1
    assert first[1] == first[3] == "1"
    edited = " ".join([*first[:3], "9", *first[4:]])  # the same number of bytes
    path.write_text(text.replace(" ".join(first), edited, 1))
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns + 1_000_000_000))  # a later write, whatever the clock tick
    assert path.stat().st_size == old.st_size
    after = pamap2.pamap2("train", cache, root / "pamap2", windows="grid")
    fresh = pamap2.pamap2("train", tmp_path / "fresh", root / "pamap2", windows="grid")
    assert np.array_equal(np.asarray(after.rows), np.asarray(fresh.rows))
    assert not np.array_equal(np.asarray(after.rows), np.asarray(before.rows))
    assert (np.asarray(after.rows)[:, 1] == 9).sum() == 1


def test_an_image_replaced_in_place_rebuilds_the_image_cache(tmp_path):
    root = copy_root(tmp_path, "data", write_xray8)
    cache = tmp_path / "cache"
    before = snapshot(load_split("xray8", "train", root, cache))
    for path in sorted((root / "xray8" / "images").glob("*.png")):  # every image: some are in the train split
        with Image.open(path) as image:
            if image.mode != "L":
                continue
        old = path.stat()
        noise = np.random.default_rng(int(path.name[:8])).integers(0, 256, (36, 36), dtype=np.uint8)
        Image.fromarray(noise, mode="L").save(path)
        assert path.stat().st_size == old.st_size  # noise PNGs of one size: only the mtime tells them apart
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns + 1_000_000_000))
    after = snapshot(load_split("xray8", "train", root, cache))
    assert_same(after, snapshot(load_split("xray8", "train", root, tmp_path / "fresh")))
    assert not torch.equal(after[0], before[0])


def test_an_annotation_file_edited_in_place_is_told_apart_by_its_contents(tmp_path):
    root = copy_root(tmp_path, "data", write_mscoco)
    cache = tmp_path / "cache"
    before = snapshot(load_split("mscoco", "train", root, cache))
    path = root / "mscoco" / "annotations" / "captions_train2017.json"
    old = path.stat()
    assert old.st_size < SMALL_TABLE_BYTES
    path.write_text(path.read_text().replace("the cat is on the mat", "the rat is on the cat"))
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))  # same size, same mtime: only the contents differ
    after = snapshot(load_split("mscoco", "train", root, cache))
    assert_same(after, snapshot(load_split("mscoco", "train", root, tmp_path / "fresh")))
    assert not torch.equal(after[1], before[1])  # the caption token ids


def test_mscoco_per_instance_rows_are_one_per_instance_annotation(tmp_path):
    root = copy_root(tmp_path, "data", write_mscoco)
    cache = tmp_path / "cache"
    per_image = vqa.mscoco("train", cache, root / "mscoco")
    per_instance = vqa.mscoco("train", cache, root / "mscoco", rows="per_instance")  # the same cache dir
    instances = json.loads((root / "mscoco" / "annotations" / "instances_train2017.json").read_text())["annotations"]
    assert len(per_image) == 11 and len(per_instance) == len(instances) == 22  # 11 images x 2 instances
    (images, tokens), labels = per_instance[list(range(len(per_instance)))]
    label_of = {c: k for k, c in enumerate(COCO_CATEGORY_IDS)}
    assert labels.tolist() == [label_of[a["category_id"]] for a in instances]  # each annotation's own category
    assert labels.tolist()[:4] == [0, 1, 0, 2]
    (image_once, tokens_once), _ = per_image[list(range(len(per_image)))]
    assert torch.equal(images[0::2], image_once) and torch.equal(images[1::2], image_once)  # the image, repeated
    assert torch.equal(tokens[0::2], tokens_once) and torch.equal(tokens[1::2], tokens_once)  # with its caption
    assert len(per_instance.images) == 11  # each distinct image decoded and cached once
    with pytest.raises(ValueError, match="^rows must be one of per_image, per_instance; got 'per_box'$"):
        vqa.mscoco("train", cache, root / "mscoco", rows="per_box")


def test_source_identity_is_cheap_for_files_and_exact_for_small_tables(tmp_path):
    (tmp_path / "a").mkdir()
    image, table = tmp_path / "a" / "x.jpg", tmp_path / "a" / "labels.csv"
    image.write_bytes(b"jpeg")
    table.write_text("x.jpg,1\n")
    key = source_identity(tmp_path / "a", files=[image], tables=[table])
    assert key == source_identity(str(tmp_path / "a"), files=[str(image)], tables=[str(table)])
    old = image.stat()
    os.utime(image, ns=(old.st_atime_ns, old.st_mtime_ns + 10**9))  # a file: a touch is a new file
    touched = source_identity(tmp_path / "a", files=[image], tables=[table])
    assert touched != key
    old = table.stat()
    os.utime(table, ns=(old.st_atime_ns, old.st_mtime_ns + 10**9))  # a small table: its contents count
    assert source_identity(tmp_path / "a", files=[image], tables=[table]) == touched
    table.write_text("x.jpg,2\n")
    os.utime(table, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert source_identity(tmp_path / "a", files=[image], tables=[table]) != touched
    assert source_identity(tmp_path / "a", files=[image, tmp_path / "a" / "gone.jpg"]) != source_identity(
        tmp_path / "a", files=[image]
    )  # a missing file is recorded, not an error
    assert source_identity(tmp_path / "a", files=[image]) != source_identity(tmp_path, files=[image])  # the root


def test_mscoco_per_instance_leaves_out_only_a_malformed_annotation(tmp_path):
    root = copy_root(tmp_path, "data", write_mscoco)
    path = root / "mscoco" / "annotations" / "instances_train2017.json"
    data = json.loads(path.read_text())
    del data["annotations"][3]["category_id"]  # the second instance of the second image
    path.write_text(json.dumps(data))
    with pytest.raises(CorruptDataError, match="annotation has no category_id"):
        vqa.mscoco("train", tmp_path / "cache", root / "mscoco", rows="per_instance")
    skipped = vqa.mscoco("train", tmp_path / "cache", root / "mscoco", rows="per_instance", on_corrupt="skip")
    assert len(skipped) == 21 and skipped.labels.tolist()[:4] == [0, 1, 0, 0]
    per_image = vqa.mscoco("train", tmp_path / "cache", root / "mscoco", on_corrupt="skip")
    assert len(per_image) == 10  # per image: the whole image is left out
