"""Readers of DABS's natural-image datasets: ImageNet (pretraining) and six transfer sets.

Each reader lists a split's images and labels from the dataset's own on-disk format
(index files, folders, pickles), reproducing DABS's split rule, then preprocesses every
image once the way DABS does -- ``Resize((224, 224)) -> CenterCrop(224) -> ToTensor()``,
no normalisation, no augmentation -- into the shared uint8 memory-mapped cache
(:mod:`dabs_rq.data.image_cache`) under ``cache_dir``, keyed by the resolved data root and
each source file's name, size and mtime (one ``stat`` per file), so another copy of the data
or a replaced file builds a new cache. Items are ``((image,), label)`` with ``image`` float32
``[3, 224, 224]`` in [0, 1]; uint8 divided by 255 is bit-identical to ``ToTensor`` on the
resized PIL image.

Layouts under the dataset folder are those of the original archives extracted in place (as
DABS does); ``download=True`` fetches the archives DABS uses with
:mod:`torchvision.datasets.utils` where they are public. ImageNet and CUB-200 are manual.

Besides its own keys, every reader takes ``image_size`` (224), ``memmap`` (true; false
decodes on the fly, for ImageNet's ~200 GB cache), ``workers`` (threads that build the
cache; default: all CPUs) and ``on_corrupt``, and ``download`` and ``root`` from the datamodule.

``on_corrupt`` (``"error"`` | ``"skip"``) decides what a corrupt or truncated image file, or a
malformed line of an index file, does: stop the run with a :class:`CorruptDataError` naming
the file (and line), or leave that sample out of the split and log one summary line per split.
A damaged file that describes the whole dataset (CIFAR's pickles, Flowers' ``imagelabels.mat``)
always stops the run, naming the file. Every split Dataset carries ``excluded`` (``{reason:
count}``, stored in the record): the index lines and images skipped as corrupt. ImageNet's
``val/`` must hold the wnid folders of ``train/``: an image outside them, or in a folder that is
not a train class, stops the run (it would have no label, or a wrong one).
"""

from __future__ import annotations

import glob
import io
import os
import pickle
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.io import loadmat
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.datasets import CIFAR10
from torchvision.datasets.folder import IMG_EXTENSIONS, DatasetFolder, find_classes

from dabs_rq.data import image_cache
from dabs_rq.data.array_cache import source_identity
from dabs_rq.data.image_cache import Box, FileImages, list_digest
from dabs_rq.data.splits import check_split
from dabs_rq.data.storage import (
    CORRUPT,
    CorruptDataError,
    CorruptLog,
    DatasetMissingError,
    LeftOut,
    download,
    download_and_extract,
)
from dabs_rq.errors import UserError

IMAGE_SIZE = 224


# --------------------------------------------------------------------------- downloads


@dataclass(frozen=True)
class Download:
    """One file DABS fetches: archives are extracted into the dataset folder, other files kept as they are."""

    url: str
    md5: str | None = None
    extract: bool = True


VGG = "https://www.robots.ox.ac.uk/~vgg/data"
DOWNLOADS: dict[str, list[Download]] = {
    "cifar10": [Download(CIFAR10.url, CIFAR10.tgz_md5)],
    "dtd": [Download(f"{VGG}/dtd/download/dtd-r1.0.1.tar.gz", "fff73e5086ae6bdbea199a49dfb8a4c1")],
    "vgg_flower": [
        Download(f"{VGG}/flowers/102/102flowers.tgz", "52808999861908f626f3c1f4e79d11fa"),
        Download(f"{VGG}/flowers/102/imagelabels.mat", "e0620be6f572b9609742df49c70aed4d", extract=False),
    ],
    # DABS's archive: the official training set (39,209 images). torchvision.datasets.GTSRB
    # downloads a different training archive (GTSRB-Training_fixed.zip), so it is not used.
    "traffic_sign": [
        Download("https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/GTSRB_Final_Training_Images.zip")
    ],
    "aircraft": [Download(f"{VGG}/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz")],
}


def _fetch(name: str, root: Path) -> None:
    for item in DOWNLOADS[name]:
        if item.extract:
            download_and_extract(item.url, root, md5=item.md5)
        else:
            download(item.url, Path(root) / os.path.basename(item.url), md5=item.md5)


def ensure_files(name: str, root: Path, needed: Iterable[Path], download: bool) -> None:
    """Fetch ``name`` when asked to and a needed file is missing; then insist that all are there.

    Downloading only when something is missing keeps a present (or hand-placed) copy from
    being re-fetched because its checksum differs.
    """
    needed = list(needed)
    if download and name in DOWNLOADS and not all(p.exists() for p in needed):
        _fetch(name, root)
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise DatasetMissingError(f"dataset '{name}' is incomplete in {root}: missing {', '.join(missing)}")


# --------------------------------------------------------------------------- preprocessing and cache


def dabs_transform(image_size: int = IMAGE_SIZE) -> transforms.Compose:
    """DABS's image pipeline up to ``ToTensor``; the cache stores its uint8 result (``ToTensor`` = that / 255)."""
    size = (image_size, image_size)
    return transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size)])


@dataclass
class ArrayImages:
    """Image ``i`` = ``pixels[i]``, a uint8 ``[H, W, 3]`` array (CIFAR-10); a class so it can go to loader workers."""

    pixels: np.ndarray

    def __call__(self, i: int) -> Image.Image:
        return Image.fromarray(self.pixels[i])


def image_dataset(
    name: str,
    split: str,
    open_image: Callable[[int], Image.Image],
    labels: Sequence[int],
    cache_dir: Path,
    source: str,
    settings: dict[str, Any] | None = None,
    image_size: int = IMAGE_SIZE,
    memmap: bool = True,
    workers: int | None = None,
    corrupt: CorruptLog | None = None,
) -> Dataset:
    """Items ``((float32 [3, s, s] in [0, 1],), label)`` for images ``open_image(i)``, cached as uint8 memmap.

    The cache (:mod:`dabs_rq.data.image_cache`) is keyed by dataset, split, ``source`` (a
    fingerprint of the sample list and the source files' identity), ``image_size`` and the
    reader's ``settings`` (split/crop choices), so any change builds a new one.
    ``memmap=False`` decodes on the fly instead; ``workers`` threads build the cache. Corrupt
    files go to ``corrupt`` (the split's log).
    """
    labels = np.asarray(labels, dtype=np.int64)
    cache = image_cache.cache_file(cache_dir, name, split, source=source, image_size=image_size, **(settings or {}))
    lines = len(corrupt) if corrupt is not None else 0  # index lines already skipped
    dataset = image_cache.image_dataset(
        open_image,
        len(labels),
        dabs_transform(image_size),
        labels,
        cache=cache if memmap else None,
        shape=(3, image_size, image_size),
        workers=workers,
        corrupt=corrupt,
        scan_record=cache.with_name(f"{cache.stem}.scan.json"),
    )
    left = LeftOut(name, split)
    left.add(f"index lines and images {CORRUPT}", lines + len(labels) - len(dataset))
    return left.attach(dataset)


def files_dataset(
    name: str,
    split: str,
    paths: Sequence[str | Path],
    labels: Sequence[int],
    cache_dir: Path,
    boxes: Sequence[Box] | None = None,
    settings: dict[str, Any] | None = None,
    corrupt: CorruptLog | None = None,
    *,
    root: Path,
    **options: Any,
) -> Dataset:
    """:func:`image_dataset` of image files (optionally cropped to ``boxes``, as DABS does for Aircraft).

    The cache key holds the files' :func:`~dabs_rq.data.array_cache.source_identity` under the data ``root``.
    """
    paths = [str(p) for p in paths]
    labels = [int(y) for y in labels]
    if not paths:
        if corrupt is not None and len(corrupt):
            corrupt.report(kept=0)
        raise DatasetMissingError(f"dataset '{name}': no {split} images found")
    boxes = list(boxes) if boxes is not None else None
    source = list_digest(
        [source_identity(root, files=paths), *zip(paths, labels, boxes if boxes is not None else [None] * len(paths))]
    )
    return image_dataset(
        name, split, FileImages(paths, boxes), labels, cache_dir, source, settings, corrupt=corrupt, **options
    )


def _is_train(split: str) -> bool:
    """True for the train split; DABS has only ``train`` and ``test`` (its ``train=False``)."""
    check_split(split)
    return split == "train"


def per_class_split(
    groups: Iterable[tuple[int, Sequence[Any]]], train: bool, seed: int = 42, train_fraction: float = 0.8
) -> tuple[list[Any], list[int]]:
    """DABS's per-class random split (Flowers, GTSRB): items and labels of one side.

    One ``RandomState(seed)`` shuffles each class's items in turn, in the order ``groups``
    gives the classes; the first ``int(train_fraction * n)`` of a class are train, the rest test.
    """
    rs = np.random.RandomState(seed)
    items, labels = [], []
    for label, members in groups:
        order = np.arange(len(members))
        rs.shuffle(order)
        cut = int(train_fraction * len(members))
        chosen = order[:cut] if train else order[cut:]
        items += [members[j] for j in chosen]
        labels += [label] * len(chosen)
    return items, labels


def _numbered_lines(path: Path) -> list[tuple[int, str]]:
    """``(1-based line number, stripped text)`` of the non-blank lines of a text index file."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise CorruptDataError(path, f"not UTF-8 text ({err})") from err
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _lines(path: Path) -> list[str]:
    return [line for _, line in _numbered_lines(path)]


def _id_table(path: Path, parse: Callable[[str], Any], what: str, corrupt: CorruptLog) -> dict[int, Any]:
    """A CUB index file (``<image id> <value>`` per line) as ``{id: parse(value)}``; bad lines go to ``corrupt``."""
    table: dict[int, Any] = {}
    for n, line in _numbered_lines(path):
        fields = line.split()
        try:
            if len(fields) != 2:
                raise ValueError(f"expected '<image id> <{what}>', got {len(fields)} fields")
            image_id, value = int(fields[0]), parse(fields[1])
            if image_id in table:
                raise ValueError(f"image id {image_id} listed twice")
        except ValueError as err:
            corrupt.add(CorruptDataError(path, str(err), n))
            continue
        table[image_id] = value
    return table


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"{value} is not in {low}..{high}")
        return value

    return parse


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR's batches hold (dicts, lists, strings, numpy arrays): no arbitrary objects."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels [N, 3072] uint8, labels [N])`` of one CIFAR-10 batch, checked (or :class:`CorruptDataError`)."""
    try:
        batch = _ArrayUnpickler(io.BytesIO(Path(path).read_bytes()), encoding="latin1").load()
        data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise CorruptDataError(path, f"not a CIFAR-10 batch ({type(err).__name__}: {err})") from err
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise CorruptDataError(path, f"pixels are {data.dtype} {list(data.shape)}, expected uint8 [N, 3072]")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu" or not ((labels >= 0) & (labels < 10)).all():
        raise CorruptDataError(path, f"labels must be {len(data)} integers in 0..9")
    return data, labels


# --------------------------------------------------------------------------- datasets


def cifar10(
    split: str, cache_dir: Path, root: Path, download: bool = False, on_corrupt: str = "error", **options: Any
) -> Dataset:
    """CIFAR-10: official train (50k) / test (10k) python-pickle batches in ``cifar-10-batches-py/``.

    The batches are read directly (``torchvision.datasets.CIFAR10`` would insist on the
    published checksums), unpickling nothing but arrays, lists and strings; a damaged batch
    stops the run (the images are in memory, so ``on_corrupt`` has no per-image case);
    ``download=True`` fetches the same archive torchvision does.
    """
    train = _is_train(split)
    corrupt = CorruptLog("cifar10", split, on_corrupt)
    folder = Path(root) / CIFAR10.base_folder
    files = [folder / name for name, _ in (CIFAR10.train_list if train else CIFAR10.test_list)]
    ensure_files("cifar10", Path(root), files, download)
    batches = [load_cifar_batch(path) for path in files]
    pixels = np.concatenate([data for data, _ in batches]).reshape(-1, 3, 32, 32)
    pixels = np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))  # HWC, as PIL wants
    labels = np.concatenate([labels for _, labels in batches])
    source = source_identity(root, files=files)
    return image_dataset("cifar10", split, ArrayImages(pixels), labels, cache_dir, source, corrupt=corrupt, **options)


def cu_birds(
    split: str,
    cache_dir: Path,
    root: Path,
    download: bool = False,
    on_corrupt: str = "error",
    num_classes: int = 200,
    **options: Any,
) -> Dataset:
    """CUB-200-2011: official ``train_test_split.txt`` (5,994 / 5,794), label = class id - 1, no bbox crop.

    An image whose line in one of the three index files is malformed or missing is a corrupt
    sample (``on_corrupt``). Manual download (``download`` cannot fetch it; accepted for the
    common reader signature).
    """
    train = _is_train(split)
    corrupt = CorruptLog("cu_birds", split, on_corrupt)
    base = Path(root) / "CUB_200_2011"
    files = {
        "path": base / "images.txt",
        "class_id": base / "image_class_labels.txt",
        "is_train": base / "train_test_split.txt",
    }
    ensure_files("cu_birds", Path(root), files.values(), download)
    paths = _id_table(files["path"], str, "path", corrupt)
    class_ids = _id_table(files["class_id"], _int_in(1, num_classes), "class id", corrupt)
    is_train = _id_table(files["is_train"], _int_in(0, 1), "is_training_image", corrupt)
    chosen, labels = [], []
    for image_id, path in paths.items():
        if image_id not in is_train:
            corrupt.add(CorruptDataError(files["is_train"], f"no line for image id {image_id} ({path})"))
        elif is_train[image_id] == int(train):
            if image_id not in class_ids:
                corrupt.add(CorruptDataError(files["class_id"], f"no line for image id {image_id} ({path})"))
            else:
                chosen.append(base / "images" / path)
                labels.append(class_ids[image_id] - 1)
    return files_dataset("cu_birds", split, chosen, labels, cache_dir, corrupt=corrupt, root=root, **options)


def load_flower_labels(path: Path, num_classes: int = 102) -> np.ndarray:
    """0-based labels of ``imagelabels.mat`` (1..``num_classes`` there); a damaged file: :class:`CorruptDataError`."""
    try:
        labels = np.asarray(loadmat(path)["labels"]).reshape(-1)
    except (ValueError, TypeError, KeyError, OSError, EOFError, IndexError) as err:
        raise CorruptDataError(path, f"cannot read the labels ({type(err).__name__}: {err})") from err
    if (
        not len(labels)
        or labels.dtype.kind not in "iuf"
        or not np.isfinite(labels).all()
        or (labels != np.round(labels)).any()
        or labels.min() < 1
        or labels.max() > num_classes
    ):
        raise CorruptDataError(path, f"'labels' must be integers in 1..{num_classes}")
    return labels.astype(int) - 1


def vgg_flower(
    split: str,
    cache_dir: Path,
    root: Path,
    download: bool = False,
    seed: int = 42,
    train_fraction: float = 0.8,
    on_corrupt: str = "error",
    **options: Any,
) -> Dataset:
    """Oxford Flowers-102, DABS's split: per-class random 80/20 of all 8,189 images (``setid.mat`` unused).

    Classes are visited in order of first appearance in ``imagelabels.mat`` (DABS's dict
    order), each shuffled by one shared ``RandomState(42)``; labels 1..102 become 0..101.
    A corrupt image is left out after the split is drawn (``on_corrupt="skip"``), so the
    other images keep their side.
    """
    train = _is_train(split)
    corrupt = CorruptLog("vgg_flower", split, on_corrupt)
    root = Path(root)
    ensure_files("vgg_flower", root, [root / "jpg", root / "imagelabels.mat"], download)
    labels = load_flower_labels(root / "imagelabels.mat")
    classes: dict[int, list[int]] = {}
    for image_id, label in enumerate(labels, start=1):
        classes.setdefault(int(label), []).append(image_id)
    ids, split_labels = per_class_split(classes.items(), train, seed, train_fraction)
    paths = [root / "jpg" / f"image_{i:05d}.jpg" for i in ids]
    return files_dataset("vgg_flower", split, paths, split_labels, cache_dir, corrupt=corrupt, root=root, **options)


def dtd(
    split: str,
    cache_dir: Path,
    root: Path,
    download: bool = False,
    partition: int = 1,
    on_corrupt: str = "error",
    **options: Any,
) -> Dataset:
    """DTD: ``train{p}.txt`` + ``val{p}.txt`` (3,760) / ``test{p}.txt`` (1,880); label = index in sorted categories.

    A list line that is not ``<category>/<file>`` of a known category is a corrupt sample.
    """
    train = _is_train(split)
    corrupt = CorruptLog("dtd", split, on_corrupt)
    base = Path(root) / "dtd"
    lists = [base / "labels" / f"{name}{partition}.txt" for name in (["train", "val"] if train else ["test"])]
    ensure_files("dtd", Path(root), [base / "images", *lists], download)
    categories = sorted(p.name for p in (base / "images").iterdir() if p.is_dir())
    index = {name: i for i, name in enumerate(categories)}
    rows, labels = [], []
    for path in lists:
        for n, row in _numbered_lines(path):
            category, _, file = row.partition("/")
            if category not in index or not file:
                corrupt.add(
                    CorruptDataError(
                        path, f"expected '<category>/<image file>' of a folder in {base / 'images'}, got {row!r}", n
                    )
                )
                continue
            rows.append(row)
            labels.append(index[category])
    return files_dataset(
        "dtd",
        split,
        [base / "images" / row for row in rows],
        labels,
        cache_dir,
        settings={"partition": partition},
        corrupt=corrupt,
        root=root,
        **options,
    )


def traffic_sign(
    split: str,
    cache_dir: Path,
    root: Path,
    download: bool = False,
    seed: int = 42,
    train_fraction: float = 0.8,
    num_classes: int = 43,
    gtsrb_sorted_files: bool = True,
    on_corrupt: str = "error",
    **options: Any,
) -> Dataset:
    """GTSRB, DABS's split: the official training set only, per-class random 80/20 with ``RandomState(42)``.

    Quirk ``gtsrb_sorted_files``: DABS shuffles each class's files in ``glob`` order, which
    depends on the filesystem; ``true`` sorts them first (reproducible anywhere), ``false``
    keeps this filesystem's ``glob`` order as DABS did.
    """
    train = _is_train(split)
    corrupt = CorruptLog("traffic_sign", split, on_corrupt)
    images = Path(root) / "GTSRB" / "Final_Training" / "Images"
    ensure_files("traffic_sign", Path(root), [images], download)

    def files(label: int) -> list[str]:
        found = glob.glob(str(images / f"{label:05d}" / "*.ppm"))
        return sorted(found) if gtsrb_sorted_files else found

    paths, labels = per_class_split(((c, files(c)) for c in range(num_classes)), train, seed, train_fraction)
    return files_dataset(
        "traffic_sign",
        split,
        paths,
        labels,
        cache_dir,
        settings={"gtsrb_sorted_files": gtsrb_sorted_files},
        corrupt=corrupt,
        root=root,
        **options,
    )


def _boxes(path: Path) -> tuple[dict[str, Box], dict[str, CorruptDataError]]:
    """``images_box.txt`` (``<name> xmin ymin xmax ymax``) as ``{name: box}``, and ``{name: error}`` of bad lines."""
    boxes, errors = {}, {}
    for n, line in _numbered_lines(path):
        name, *values = line.split()
        try:
            box = tuple(int(v) for v in values)
            if len(box) != 4 or not (0 <= box[0] < box[2] and 0 <= box[1] < box[3]):
                raise ValueError
            boxes[name] = box
        except ValueError:
            errors[name] = CorruptDataError(
                path, f"expected '<image> xmin ymin xmax ymax' (integers, min < max), got {line!r}", n
            )
    return boxes, errors


def aircraft(
    split: str,
    cache_dir: Path,
    root: Path,
    download: bool = False,
    aircraft_bbox_crop: bool = True,
    aircraft_head_outputs: int = 102,
    on_corrupt: str = "error",
    **options: Any,
) -> Dataset:
    """FGVC-Aircraft 2013b: ``images_variant_trainval.txt`` (6,667) / ``images_variant_test.txt`` (3,333).

    Label = index of the variant in the sorted variant names. Quirks: ``aircraft_bbox_crop``
    crops each image to its ``images_box.txt`` box before resizing (DABS); the head has
    ``aircraft_head_outputs`` logits (DABS: 102 for 100 variants), checked to hold every label.
    An index line with an unknown variant, or (when cropping) a missing or malformed box, is a
    corrupt sample.
    """
    train = _is_train(split)
    corrupt = CorruptLog("aircraft", split, on_corrupt)
    data = Path(root) / "fgvc-aircraft-2013b" / "data"
    index = data / f"images_variant_{'trainval' if train else 'test'}.txt"
    ensure_files(
        "aircraft", Path(root), [data / "images", data / "variants.txt", data / "images_box.txt", index], download
    )
    variants = sorted(_lines(data / "variants.txt"))
    if aircraft_head_outputs < len(variants):
        raise ValueError(f"aircraft_head_outputs={aircraft_head_outputs} cannot hold {len(variants)} variants")
    label_of = {variant: i for i, variant in enumerate(variants)}
    all_boxes, bad_boxes = _boxes(data / "images_box.txt") if aircraft_bbox_crop else ({}, {})
    paths, labels, boxes = [], [], []
    for n, line in _numbered_lines(index):
        name, _, variant = line.partition(" ")
        if variant not in label_of:
            corrupt.add(
                CorruptDataError(index, f"expected '<image> <variant>' of a variant in variants.txt, got {line!r}", n)
            )
            continue
        if aircraft_bbox_crop:
            if name in bad_boxes:
                corrupt.add(bad_boxes[name])
                continue
            if name not in all_boxes:
                corrupt.add(CorruptDataError(data / "images_box.txt", f"no box for image {name}"))
                continue
            boxes.append(all_boxes[name])
        paths.append(data / "images" / f"{name}.jpg")
        labels.append(label_of[variant])
    return files_dataset(
        "aircraft",
        split,
        paths,
        labels,
        cache_dir,
        boxes=boxes if aircraft_bbox_crop else None,
        settings={"aircraft_bbox_crop": aircraft_bbox_crop},
        corrupt=corrupt,
        root=root,
        **options,
    )


def check_class_folders(folder: Path, classes: dict[str, int]) -> None:
    """Every image of ``folder`` must lie in a folder of a class in ``classes`` (torchvision's
    ``make_dataset`` would silently leave out the others), else a one-line :class:`UserError`."""
    outside, unknown = [], {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_dir():
            if entry.name not in classes:
                count = sum(f.lower().endswith(IMG_EXTENSIONS) for _, _, files in os.walk(entry.path) for f in files)
                if count:
                    unknown[entry.name] = count
        elif entry.name.lower().endswith(IMG_EXTENSIONS):
            outside.append(entry.name)
    if outside:
        shown = ", ".join(outside[:3]) + (", ..." if len(outside) > 3 else "")
        raise UserError(
            f"{folder} holds {len(outside)} images outside the class folders ({shown}), which would "
            "have no label: put each into its class (wnid) folder, as train/ is laid out"
        )
    if unknown:
        shown = ", ".join(list(unknown)[:3]) + (", ..." if len(unknown) > 3 else "")
        raise UserError(
            f"{folder} has {len(unknown)} folders of {sum(unknown.values())} images that are not "
            f"classes of the train folder ({shown}): fix the layout, or the 'folders' option"
        )


def imagenet(
    split: str,
    cache_dir: Path,
    root: Path,
    download: bool = False,
    folders: dict[str, str] | None = None,
    on_corrupt: str = "error",
    **options: Any,
) -> Dataset:
    """ImageNet-1k as two ImageFolders (``train/`` and ``val/``, one folder per wnid); label = sorted wnid index.

    Classes come from the train folder for both splits, so labels agree even if a split
    lacks a class. Manual download (``download`` is accepted for the common signature).
    """
    _is_train(split)  # validates the name
    corrupt = CorruptLog("imagenet", split, on_corrupt)
    folders = {"train": "train", "test": "val", **(folders or {})}
    ensure_files("imagenet", Path(root), [Path(root) / f for f in folders.values()], download)
    _, class_to_idx = find_classes(Path(root) / folders["train"])
    check_class_folders(Path(root) / folders[split], class_to_idx)
    samples = DatasetFolder.make_dataset(str(Path(root) / folders[split]), class_to_idx, extensions=IMG_EXTENSIONS)
    paths, labels = zip(*samples) if samples else ((), ())
    return files_dataset("imagenet", split, paths, labels, cache_dir, corrupt=corrupt, root=root, **options)
