"""Generic image readers: brand-new image datasets (a class-folder tree, a table of files) from YAML alone."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from dabs_rq.data import domains
from dabs_rq.data.datamodule import DomainDataModule
from dabs_rq.data.domains import DomainConfigError
from dabs_rq.data.storage import CorruptDataError
from tests.conftest import load_split
from tests.generic_helpers import public_run_adds_row, record, run_public_command, table_rows, write_domain

COLOURS = {"red": 0, "green": 1, "blue": 2}  # class -> the channel that is bright
SIZE = [16, 16]


def _inputs(channels=3):
    return [
        {"_target_": "dabs_rq.encoder.PatchEmbedding2d", "image_size": SIZE, "patch_size": [8, 8], "channels": channels}
    ]


def _image(path, colour, ident, size=(20, 12)):
    """A ``size`` image: channel ``COLOURS[colour]`` bright (250), the others hold ``ident`` (which image it is)."""
    pixels = np.full((size[1], size[0], 3), ident, dtype=np.uint8)
    pixels[..., COLOURS[colour]] = 250
    path.parent.mkdir(parents=True, exist_ok=True)
    # JPEG would blur the identity a little: the tests read it back rounded to tens
    Image.fromarray(pixels).save(path)
    return path


def _tree(folder, per_class=5, classes=tuple(COLOURS)):
    """``folder/<class>/<k>.png`` (blue ones as JPEG); image ident = 10 * (1 + global index)."""
    n = 0
    for name in classes:
        for k in range(per_class):
            n += 1
            _image(
                folder / name / ("sub" if k == 0 else "") / f"{k}.{'jpg' if name == 'blue' else 'png'}", name, 10 * n
            )
    return n


def _ident(x):
    """The ident of an item's image (the mean of its two dim channels, rounded to tens)."""
    bright = int(x.mean(dim=(1, 2)).argmax())
    dim = [c for c in range(3) if c != bright]
    return int(round(float(x[dim].mean()) * 255 / 10) * 10), bright


def _folder_yamls(folder, inputs=None, **changes):
    reader = {
        "_target_": "dabs_rq.data.generic.images.image_folder",
        "root": "photos",
        "image_size": SIZE,
        "split_seed": 3,
    }
    write_domain(
        folder,
        "my_photos",
        display_name="My photos",
        domain="My images",
        role="pretrain",
        inputs=_inputs(),
        reader={**reader, "label_type": "none"},
        batch_size=8,
        transfer=["my_photos_colour"],
    )
    return write_domain(
        folder,
        "my_photos_colour",
        display_name="My photo colours",
        domain="My images",
        role="transfer",
        inputs=inputs or _inputs(),
        reader=_changed(reader, changes),
        batch_size=8,
        task={"_target_": "dabs_rq.tasks.MulticlassTask", "num_classes": 3},
    )


def _changed(reader, changes):
    """``reader`` with ``changes`` (a None value removes the key)."""
    return {k: v for k, v in {**reader, **changes}.items() if v is not None}


def _all(dataset):
    (x, *rest), y = dataset[list(range(len(dataset)))]
    return x, y


@pytest.mark.integration
def test_a_new_image_folder_domain_runs_pretrain_transfer_table_from_yaml_alone(tmp_path, data_cache):
    mine = tmp_path / "mine"
    _tree(mine / "photos")
    _folder_yamls(mine)
    stored = public_run_adds_row(
        mine, tmp_path, data_cache, "my_photos", "my_photos_colour", "My photo colours", "My images"
    )
    assert stored["protocol"]["n_train"] == 12 and stored["protocol"]["n_test"] == 3  # 15 files, 20% held out


def test_folder_items_labels_and_a_seeded_split_over_files(tmp_path):
    mine = tmp_path / "mine"
    total = _tree(mine / "photos")
    cfg = domains.load("my_photos_colour", extra=[mine]) if _folder_yamls(mine) else None
    assert cfg.reader.root == str((mine / "photos").resolve())  # resolved against the YAML's folder
    train = load_split("my_photos_colour", "train", tmp_path, tmp_path / "cache", cfg=cfg)
    test = load_split("my_photos_colour", "test", tmp_path, tmp_path / "cache", cfg=cfg)
    (x,), y = train[0]
    assert x.dtype == torch.float32 and x.shape == (3, 16, 16) and y.dtype == torch.long
    seen = {}
    for split in (train, test):
        x, y = _all(split)
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        for image, label in zip(x, y):
            ident, bright = _ident(image)
            # classes sorted: blue=0, green=1, red=2
            assert ["blue", "green", "red"][int(label)] == list(COLOURS)[bright]
            assert ident not in seen
            seen[ident] = split
    assert sorted(seen) == [10 * (i + 1) for i in range(total)]  # every file once, in one split
    assert sum(s is test for s in seen.values()) == 3
    # the split is seeded: another seed holds out other files
    other = domains.load("my_photos_colour", extra=[mine]) if _folder_yamls(mine, split_seed=4) else None
    held_out = {
        _ident(im)[0] for im in _all(load_split("my_photos_colour", "test", tmp_path, tmp_path / "c2", cfg=other))[0]
    }
    assert held_out != {i for i, s in seen.items() if s is test}


def test_folder_classes_order_grayscale_and_file_splits(tmp_path):
    mine = tmp_path / "mine"
    _tree(mine / "train", per_class=2)
    _tree(mine / "test", per_class=1, classes=("green", "red"))  # a class missing from test keeps its index
    write_domain(
        mine,
        "files",
        domain="d",
        role="transfer",
        inputs=_inputs(channels=1),
        batch_size=4,
        task={"_target_": "dabs_rq.tasks.MulticlassTask", "num_classes": 3},
        reader={
            "_target_": "dabs_rq.data.generic.images.image_folder",
            "split_by": "files",
            "train": "train",
            "test": "test",
            "image_size": SIZE,
            "channels": 1,
            "classes": ["red", "green", "blue"],
        },
    )
    cfg = domains.load("files", extra=[mine])
    x, y = _all(load_split("files", "train", tmp_path, tmp_path / "cache", cfg=cfg))
    assert x.shape == (6, 1, 16, 16) and sorted(y.tolist()) == [0, 0, 1, 1, 2, 2]
    x, y = _all(load_split("files", "test", tmp_path, tmp_path / "cache", cfg=cfg))
    assert x.shape == (2, 1, 16, 16) and sorted(y.tolist()) == [0, 1]  # red=0, green=1, as classes says


def test_unlabelled_folder_any_depth(tmp_path):
    mine = tmp_path / "mine"
    for k, where in enumerate(["a.png", "x/b.PNG", "x/y/c.jpeg", "d.bmp", ".hidden.png", ".cache/e.png"]):
        _image(mine / "pile" / where, "red", 10 * k + 10)
    (mine / "pile" / "notes.txt").write_text("not an image")
    write_domain(
        mine,
        "pile",
        domain="d",
        role="pretrain",
        inputs=_inputs(),
        batch_size=2,
        transfer=["x"],
        reader={
            "_target_": "dabs_rq.data.generic.images.image_folder",
            "root": "pile",
            "label_type": "none",
            "image_size": SIZE,
            "test_fraction": 0.25,
        },
    )
    cfg = domains.load("pile", extra=[mine])
    train = load_split("pile", "train", tmp_path, tmp_path / "cache", cfg=cfg)
    test = load_split("pile", "test", tmp_path, tmp_path / "cache", cfg=cfg)
    assert len(train) == 3 and len(test) == 1  # four images; hidden files and folders, text files ignored
    assert set(_all(train)[1].tolist()) == {0}


# --------------------------------------------------------------------------- image_table


def _table_data(folder, per_class=4):
    """images/<colour>_<k>.png and rows (path, colour, tags, brightness, split)."""
    rows = []
    n = 0
    for name in COLOURS:
        for k in range(per_class):
            n += 1
            _image(folder / "images" / f"{name}_{k}.png", name, 10 * n)
            tags = "|".join(t for t, on in (("warm", name == "red"), ("odd", k % 2 == 1)) if on)
            rows.append(
                {
                    "path": f"{name}_{k}.png",
                    "colour": name,
                    "tags": tags,
                    "warm": int(name == "red"),
                    "odd": k % 2,
                    "brightness": 0.1 * n,
                    "part": "test" if k == 0 else "train",
                }
            )
    return rows


def _write_csv(path, rows):
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _table_yamls(folder, **changes):
    reader = {
        "_target_": "dabs_rq.data.generic.images.image_table",
        "table": "photos.csv",
        "images_root": "images",
        "image_size": SIZE,
        "label_column": "colour",
        "split_by": "column",
        "split_column": "part",
    }
    write_domain(
        folder,
        "my_table",
        display_name="My table",
        domain="My images",
        role="pretrain",
        inputs=_inputs(),
        reader=_changed(reader, {"label_type": "none", "label_column": None}),
        batch_size=8,
        transfer=["my_table_colour"],
    )
    return write_domain(
        folder,
        "my_table_colour",
        display_name="My table colours",
        domain="My images",
        role="transfer",
        inputs=_inputs(),
        reader=_changed(reader, changes),
        batch_size=8,
        task={"_target_": "dabs_rq.tasks.MulticlassTask", "num_classes": 3},
    )


@pytest.mark.integration
def test_a_new_image_table_domain_runs_pretrain_transfer_table_from_yaml_alone(tmp_path, data_cache):
    mine = tmp_path / "mine"
    _write_csv(mine / "photos.csv", _table_data(mine))
    _table_yamls(mine)
    done = run_public_command("my_table", mine, tmp_path, data_cache)
    assert done.returncode == 0, done.stderr[-3000:]
    assert table_rows(tmp_path)["my_table_colour"]["display_name"] == "My table colours"
    stored = record(tmp_path, "my_table_colour")
    assert stored["protocol"]["n_train"] == 9 and stored["protocol"]["n_test"] == 3  # the split column


def test_table_column_split_and_class_labels(tmp_path):
    mine = tmp_path / "mine"
    rows = _table_data(mine)
    _write_csv(mine / "photos.csv", rows)
    cfg = domains.load("my_table_colour", extra=[mine]) if _table_yamls(mine) else None
    for split, expected in (
        ("train", [r for r in rows if r["part"] == "train"]),
        ("test", [r for r in rows if r["part"] == "test"]),
    ):
        x, y = _all(load_split("my_table_colour", split, tmp_path, tmp_path / "cache", cfg=cfg))
        idents = [_ident(im)[0] for im in x]
        want = [10 * (rows.index(r) + 1) for r in expected]
        assert idents == want  # table order, the split column's rows
        assert y.tolist() == [sorted(COLOURS).index(r["colour"]) for r in expected]


@pytest.mark.parametrize(
    "changes, expected",
    [
        (
            {"label_type": "multilabel", "label_column": None, "label_columns": ["warm", "odd"]},
            lambda r: [r["warm"], r["odd"]],
        ),
        # names in one column: classes sorted -> [odd, warm]
        (
            {"label_type": "multilabel", "label_column": "tags", "label_separator": "|"},
            lambda r: [r["odd"], int(r["colour"] == "red")],
        ),
        ({"label_type": "score", "label_column": "brightness"}, lambda r: r["brightness"]),
    ],
)
def test_table_multilabel_and_score_labels(tmp_path, changes, expected):
    mine = tmp_path / "mine"
    rows = _table_data(mine)
    _write_csv(mine / "photos.csv", rows)
    cfg = domains.load("my_table_colour", extra=[mine]) if _table_yamls(mine, **changes) else None
    x, y = _all(load_split("my_table_colour", "train", tmp_path, tmp_path / "cache", cfg=cfg))
    assert y.dtype == torch.float32
    want = torch.tensor([expected(r) for r in rows if r["part"] == "train"], dtype=torch.float32)
    assert torch.allclose(y, want), (y, want)


def test_table_file_splits_a_ratio_split_and_shared_images(tmp_path):
    mine = tmp_path / "mine"
    rows = _table_data(mine)
    # train and test tables (CSV, JSONL) in another folder; paths relative to images_root; two rows name one image
    (mine / "lists").mkdir()
    _write_csv(mine / "lists" / "train.csv", [r for r in rows if r["part"] == "train"] + [rows[1]])
    (mine / "lists" / "test.jsonl").write_text(
        "".join(json.dumps({"path": r["path"], "colour": r["colour"]}) + "\n" for r in rows if r["part"] == "test")
    )
    write_domain(
        mine,
        "t",
        domain="d",
        role="transfer",
        inputs=_inputs(),
        batch_size=4,
        task={"_target_": "dabs_rq.tasks.MulticlassTask", "num_classes": 3},
        reader={
            "_target_": "dabs_rq.data.generic.images.image_table",
            "split_by": "files",
            "train": "lists/train.csv",
            "test": "lists/test.jsonl",
            "images_root": "images",
            "label_column": "colour",
            "image_size": SIZE,
        },
    )
    cfg = domains.load("t", extra=[mine])
    x, y = _all(load_split("t", "train", tmp_path, tmp_path / "cache", cfg=cfg))
    assert len(y) == 10 and torch.equal(x[-1], x[0])  # rows[1] is the first train row and the last
    x, y = _all(load_split("t", "test", tmp_path, tmp_path / "cache", cfg=cfg))
    assert y.tolist() == [2, 1, 0]  # red, green, blue in the sorted classes blue, green, red
    # a seeded ratio split over rows: disjoint, covering the table
    write_domain(
        mine,
        "r",
        domain="d",
        role="transfer",
        inputs=_inputs(),
        batch_size=4,
        task={"_target_": "dabs_rq.tasks.MulticlassTask", "num_classes": 3},
        reader={
            "_target_": "dabs_rq.data.generic.images.image_table",
            "table": "lists/train.csv",
            "images_root": "images",
            "label_column": "colour",
            "image_size": SIZE,
            "test_fraction": 0.3,
        },
    )
    cfg = domains.load("r", extra=[mine])
    sizes = [len(load_split("r", s, tmp_path, tmp_path / "cache", cfg=cfg)) for s in ("train", "test")]
    assert sizes == [7, 3]


# --------------------------------------------------------------------------- schema mistakes


@pytest.mark.parametrize(
    "change, message",
    [
        ({"roots": "photos"}, "reader.roots: is not a key of image_folder; valid keys: split_by"),
        ({"image_size": 16}, "reader.image_size: must be of type list[int], got 16"),
        ({"image_size": [16]}, "reader.image_size: must be [H, W]"),
        ({"channels": "rgb"}, "reader.channels: must be of type int, got 'rgb'"),
        ({"channels": 4}, "reader.channels: must be 3 (RGB) or 1 (grayscale), got 4"),
        ({"root": "fotos"}, "reader.root: file or folder"),
        ({"image_size": None}, "reader.image_size: is missing"),
        ({"classes": ["red", "green"]}, "reader.classes: does not list the subfolder(s) blue"),
        ({"classes": ["red", "green", "blue", "pink"]}, "reader.classes: names pink, which is not a subfolder"),
        ({"split_by": "column"}, "reader.split_by: must be ratio or files for image_folder"),
        ({"split_by": "files"}, "reader.train: is needed with split_by: files"),
        ({"label_column": "colour"}, "reader.label_column: is not used by image_folder"),
        ({"label_type": "score"}, "reader.label_type: must be class (the subfolder names) or none"),
    ],
)
def test_folder_schema_mistakes_name_the_file_the_key_and_what_is_expected(tmp_path, change, message):
    mine = tmp_path / "mine"
    _tree(mine / "photos", per_class=1)
    path = _folder_yamls(mine, **change)
    with pytest.raises(DomainConfigError) as err:
        domains.load("my_photos_colour", extra=[mine])
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)


def test_a_folder_without_class_folders_says_so(tmp_path):
    mine = tmp_path / "mine"
    _image(mine / "photos" / "a.png", "red", 10)
    path = _folder_yamls(mine)
    with pytest.raises(DomainConfigError, match="reader.root: .* holds no class subfolders"):
        domains.load("my_photos_colour", extra=[mine])
    assert path.exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"path_colum": "path"}, "reader.path_colum: is not a key of image_table; valid keys: split_by"),
        ({"path_column": "file"}, "reader.path_column: column 'file' is not in"),
        ({"label_column": "color"}, "reader.label_column: column 'color' is not in"),
        ({"split_column": "fold"}, "reader.split_column: column 'fold' is not in"),
        ({"table": "photos.xlsx"}, "reader.table: file or folder"),
        ({"images_root": "imgs"}, "reader.images_root: file or folder"),
        (
            {"label_type": "multilabel", "label_column": None},
            "reader.label_column: is needed with label_type: multilabel",
        ),
        (
            {"label_type": "multilabel", "label_columns": ["warm", "cold"]},
            "reader.label_columns: column 'cold' is not in",
        ),
        ({"test_fraction": "most"}, "reader.test_fraction: must be of type float, got 'most'"),
        ({"split_by": "files"}, "reader.train: is needed with split_by: files"),
    ],
)
def test_table_schema_mistakes_name_the_file_the_key_and_what_is_expected(tmp_path, change, message):
    mine = tmp_path / "mine"
    _write_csv(mine / "photos.csv", _table_data(mine, per_class=1))
    path = _table_yamls(mine, **change)
    with pytest.raises(DomainConfigError) as err:
        domains.load("my_table_colour", extra=[mine])
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)


def test_a_table_that_is_not_a_table_file(tmp_path):
    mine = tmp_path / "mine"
    _write_csv(mine / "photos.csv", _table_data(mine, per_class=1))
    (mine / "photos.txt").write_text("path,colour\n")
    path = _table_yamls(mine, table="photos.txt")
    with pytest.raises(DomainConfigError) as err:
        domains.load("my_table_colour", extra=[mine])
    assert str(err.value).startswith(f"{path}: reader.table: must be a table file (.csv"), str(err.value)


# --------------------------------------------------------------------------- corrupt files


def _truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def test_a_corrupt_image_in_a_folder_stops_the_run_or_is_skipped(tmp_path, caplog):
    mine = tmp_path / "mine"
    _tree(mine / "photos")
    _truncate(mine / "photos" / "green" / "2.png")
    _truncate(mine / "photos" / "blue" / "3.jpg")
    cfg = domains.load("my_photos_colour", extra=[mine]) if _folder_yamls(mine) else None
    with pytest.raises(CorruptDataError, match=r"photos/(green/2\.png|blue/3\.jpg): cannot decode image"):
        for split in ("train", "test"):
            DomainDataModule(cfg, tmp_path / "c1").split(split)
    with caplog.at_level(logging.WARNING):
        skipping = DomainDataModule(cfg, tmp_path / "c2", on_corrupt="skip")
        sizes = [len(skipping.split(s)) for s in ("train", "test")]
    assert sum(sizes) == 13  # 15 files, 2 corrupt
    lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert lines and all(line.startswith("skipped ") and "corrupt files in photos" in line for line in lines)
    # the cache remembers the skipped files: an error-mode run on it still stops
    with pytest.raises(CorruptDataError):
        for split in ("train", "test"):
            DomainDataModule(cfg, tmp_path / "c2").split(split)


def test_a_corrupt_image_or_a_missing_file_of_a_table(tmp_path):
    mine = tmp_path / "mine"
    rows = _table_data(mine)
    rows[5]["path"] = "gone.png"  # a train row (k=1)
    _write_csv(mine / "photos.csv", rows)
    _truncate(mine / "images" / "blue_2.png")
    cfg = domains.load("my_table_colour", extra=[mine]) if _table_yamls(mine) else None
    with pytest.raises(CorruptDataError, match=r"photos.csv line 7: image file .*gone.png does not exist"):
        load_split("my_table_colour", "train", tmp_path, tmp_path / "c1", cfg=cfg)
    (mine / "images" / "gone.png").write_bytes(b"not a png")
    with pytest.raises(CorruptDataError, match=r"gone.png: cannot decode image"):
        load_split("my_table_colour", "train", tmp_path, tmp_path / "c1", cfg=cfg)
    (mine / "images" / "gone.png").unlink()
    skipping = DomainDataModule(cfg, tmp_path / "c2", on_corrupt="skip")
    x, y = _all(skipping.split("train"))
    assert len(y) == 9 - 2
    assert y.tolist() == [
        sorted(COLOURS).index(r["colour"]) for i, r in enumerate(rows) if r["part"] == "train" and i not in (5, 10)
    ]


@pytest.mark.parametrize(
    "inputs, message",
    [
        (_inputs(channels=1), "inputs[0].channels: is 1 but the reader makes 3"),
        ([{**_inputs()[0], "image_size": [32, 32]}], "inputs[0].image_size: is [32, 32] but the reader makes [16, 16]"),
    ],
)
def test_inputs_that_do_not_fit_the_images_are_named(tmp_path, inputs, message):
    mine = tmp_path / "mine"
    _tree(mine / "photos", per_class=1)
    path = _folder_yamls(mine, inputs=inputs)
    with pytest.raises(DomainConfigError) as err:
        domains.load("my_photos_colour", extra=[mine])
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)
