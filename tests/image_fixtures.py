"""Tiny copies of DABS's natural-image datasets, written in each dataset's real on-disk format.

Every image is a solid colour that encodes (label, instance): red = ``code(label)``, green =
``code(instance)``, so a test can read back from the preprocessed tensor which file landed
in which split with which label. Sizes vary and are small; the readers resize to 224x224.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

STEP, OFFSET = 24, 10  # colour code: value = OFFSET + STEP * k, k <= 9


def code(k: int) -> int:
    return OFFSET + STEP * k


def decode(value: float) -> int:
    return int(round((value - OFFSET) / STEP))


def solid(label: int, instance: int, size: tuple[int, int] = (16, 24)) -> Image.Image:
    """A ``size`` (width, height) RGB image of the colour coding (label, instance)."""
    return Image.new("RGB", size, (code(label), code(instance), 128))


def save_jpeg(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=95, subsampling=0)


def _size(label: int, instance: int) -> tuple[int, int]:
    return 16 + 8 * (instance % 3), 16 + 8 * (label % 2)


def write_cifar10(folder: Path) -> dict:
    """``cifar-10-batches-py/``: five training pickles of 4 images, a test pickle of 5, ``batches.meta``."""
    base = folder / "cifar-10-batches-py"
    base.mkdir(parents=True)

    def batch(indices: range, label_name: str) -> dict:
        labels = [i % 10 for i in indices]
        planes = [np.asarray(solid(i % 10, i // 10, (32, 32))).transpose(2, 0, 1).reshape(-1) for i in indices]
        return {
            "batch_label": label_name,
            "labels": labels,
            "data": np.stack(planes).astype(np.uint8),
            "filenames": [f"img_{i}.png" for i in indices],
        }

    for b in range(5):
        with open(base / f"data_batch_{b + 1}", "wb") as f:
            pickle.dump(batch(range(4 * b, 4 * b + 4), f"training batch {b + 1} of 5"), f, protocol=2)
    with open(base / "test_batch", "wb") as f:
        pickle.dump(batch(range(20, 25), "testing batch 1 of 1"), f, protocol=2)
    with open(base / "batches.meta", "wb") as f:
        names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        pickle.dump({"label_names": names, "num_cases_per_batch": 4, "num_vis": 3072}, f, protocol=2)
    return {"train": 20, "test": 5, "classes": 10}


def _numbered(values: list) -> str:
    """CUB's index-file format: ``<1-based id> <value>`` per line."""
    return "".join(f"{i} {v}\n" for i, v in enumerate(values, start=1))


def write_cu_birds(folder: Path) -> dict:
    """``CUB_200_2011/``: 3 classes x 4 images; even instances train (``train_test_split.txt``)."""
    base = folder / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    images, labels, split = [], [], []
    for c, name in enumerate(classes):
        for k in range(4):
            rel = f"{name}/{name.split('.')[1]}_{k:04d}_{100 + k}.jpg"
            save_jpeg(solid(c, k, _size(c, k)), base / "images" / rel)
            images.append(rel)
            labels.append(c + 1)
            split.append(int(k % 2 == 0))
    (base / "images.txt").write_text(_numbered(images))
    (base / "image_class_labels.txt").write_text(_numbered(labels))
    (base / "train_test_split.txt").write_text(_numbered(split))
    (base / "classes.txt").write_text(_numbered(classes))
    return {"train": 6, "test": 6, "classes": 3}


FLOWER_LABELS = [2, 1, 3, 2, 2, 1, 3, 1, 2, 3, 1, 1, 2, 3, 2]  # 1-based, interleaved: 5 / 6 / 4 per class


def write_vgg_flower(folder: Path) -> dict:
    """``jpg/image_%05d.jpg`` + ``imagelabels.mat`` (1-based labels) + ``setid.mat`` (unused by DABS)."""
    seen: dict[int, int] = {}
    for image_id, label in enumerate(FLOWER_LABELS, start=1):
        k = seen[label] = seen.get(label, -1) + 1
        save_jpeg(solid(label - 1, k, _size(label, k)), folder / "jpg" / f"image_{image_id:05d}.jpg")
    savemat(folder / "imagelabels.mat", {"labels": np.array([FLOWER_LABELS], dtype=np.uint8)})
    ids = np.arange(1, len(FLOWER_LABELS) + 1, dtype=np.uint16)
    savemat(folder / "setid.mat", {"trnid": ids[:5], "valid": ids[5:10], "tstid": ids[10:]})
    return {"train": 4 + 4 + 3, "test": 1 + 2 + 1, "classes": 3}


DTD_CATEGORIES = ["zigzagged", "banded", "marbled"]  # created out of order; labels follow sorted names


def write_dtd(folder: Path) -> dict:
    """``dtd/images/<cat>/<cat>_NNNN.jpg`` + ``dtd/labels/{train,val,test}1.txt`` (one image each)."""
    base = folder / "dtd"
    lists = {"train1.txt": [], "val1.txt": [], "test1.txt": []}
    for cat in DTD_CATEGORIES:
        label = sorted(DTD_CATEGORIES).index(cat)
        for k, list_name in enumerate(lists):
            rel = f"{cat}/{cat}_{k + 1:04d}.jpg"
            save_jpeg(solid(label, k, _size(label, k)), base / "images" / rel)
            lists[list_name].append(rel)
    (base / "labels").mkdir(parents=True)
    for list_name, rows in lists.items():
        (base / "labels" / list_name).write_text("".join(f"{r}\n" for r in rows))
    return {"train": 6, "test": 3, "classes": 3}


GTSRB_COUNTS = [5, 6, 4]


def write_traffic_sign(folder: Path) -> dict:
    """``GTSRB/Final_Training/Images/000NN/TTTTT_IIIII.ppm`` + ``GT-000NN.csv`` per class."""
    for c, count in enumerate(GTSRB_COUNTS):
        class_dir = folder / "GTSRB" / "Final_Training" / "Images" / f"{c:05d}"
        class_dir.mkdir(parents=True)
        rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
        # written in reverse so that the directory order differs from the sorted order
        for k in reversed(range(count)):
            name = f"{k // 3:05d}_{k % 3:05d}.ppm"
            image = solid(c, k, _size(c, k))
            image.save(class_dir / name, "PPM")
            rows.append(f"{name};{image.width};{image.height};1;1;{image.width - 1};{image.height - 1};{c}")
        (class_dir / f"GT-{c:05d}.csv").write_text("\n".join(rows) + "\n")
    return {"train": 4 + 4 + 3, "test": 1 + 2 + 1, "classes": 3}


AIRCRAFT_VARIANTS = ["A340-300", "707-320", "Cessna 172"]  # file order; labels follow sorted names
AIRCRAFT_BOX = (8, 8, 24, 24)  # xmin ymin xmax ymax, aligned to JPEG blocks


def write_aircraft(folder: Path) -> dict:
    """``fgvc-aircraft-2013b/data/``: ``images/*.jpg``, ``variants.txt``, ``images_variant_{trainval,test}.txt``,
    ``images_box.txt``. The coded colour fills only the box; outside it the photo is black."""
    data = folder / "fgvc-aircraft-2013b" / "data"
    lists = {"trainval": [], "test": []}
    boxes = []
    for v, variant in enumerate(AIRCRAFT_VARIANTS):
        label = sorted(AIRCRAFT_VARIANTS).index(variant)
        for k in range(3):
            name = f"{1000000 + 10 * v + k:07d}"
            image = Image.new("RGB", (40, 32))
            image.paste(solid(label, k, (16, 16)), AIRCRAFT_BOX[:2])
            save_jpeg(image, data / "images" / f"{name}.jpg")
            lists["trainval" if k < 2 else "test"].append(f"{name} {variant}")
            boxes.append(f"{name} {' '.join(map(str, AIRCRAFT_BOX))}")
    (data / "variants.txt").write_text("".join(f"{v}\n" for v in AIRCRAFT_VARIANTS))
    for split, rows in lists.items():
        (data / f"images_variant_{split}.txt").write_text("".join(f"{r}\n" for r in rows))
    (data / "images_box.txt").write_text("".join(f"{b}\n" for b in boxes))
    return {"train": 6, "test": 3, "classes": 3}


IMAGENET_WNIDS = ["n01440764", "n01443537"]


def write_imagenet(folder: Path) -> dict:
    """``train/<wnid>/<wnid>_N.JPEG`` (4 per class) and ``val/<wnid>/ILSVRC2012_val_N.JPEG`` (2 per class).

    One training image is greyscale (ImageNet has some), with grey level = the label's code."""
    val_id = 0
    for c, wnid in enumerate(IMAGENET_WNIDS):
        for k in range(4):
            image = solid(c, k, _size(c, k))
            if (c, k) == (1, 3):
                image = Image.new("L", (20, 28), code(c))
            save_jpeg(image, folder / "train" / wnid / f"{wnid}_{k + 1}.JPEG")
        for k in range(2):
            val_id += 1
            save_jpeg(solid(c, k), folder / "val" / wnid / f"ILSVRC2012_val_{val_id:08d}.JPEG")
    return {"train": 8, "test": 4, "classes": 2}


WRITERS = {
    "cifar10": write_cifar10,
    "cu_birds": write_cu_birds,
    "vgg_flower": write_vgg_flower,
    "dtd": write_dtd,
    "traffic_sign": write_traffic_sign,
    "aircraft": write_aircraft,
    "imagenet": write_imagenet,
}


def write_all(root: Path) -> dict[str, dict]:
    """Every dataset under ``root/<name>`` (the YAMLs' ``data.folder``); returns the expected split sizes."""
    return {name: write(Path(root) / name) for name, write in WRITERS.items()}
