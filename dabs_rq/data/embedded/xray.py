"""Pseudo-radiographs drawn on real lung masks (an offline ChestX-ray8): only the lung geometry is real.

No installable package ships chest X-ray pixels with labels. The ``torchxrayvision`` wheel ships
``data/semantic_masks_v7labs_lungs.zip``: 517 real lung segmentation masks traced on real chest
X-rays (V7 Labs COVID-19 X-ray set; PNG, up to 5,623 px wide, 0 = background, 255 = lung). Each
mask is resized to ``image_size`` x ``image_size`` (aspect ratio not kept, as DABS resizes X-rays)
and a pseudo-radiograph is drawn on it (:func:`render`): a soft-tissue body, dark lung fields from
the mask with lung-marking texture, curved ribs, a spine, a heart shadow, then blur, exposure
jitter and noise. Four findings, each present or absent per image independently with probability
``prevalence`` (a multi-label task as ChestX-ray8's, scored by macro AUROC):

* ``Nodule``: one to three small round opacities (radius 4-6.5 % of the image) in the lung fields;
* ``Effusion``: a basal opacity with a meniscus, filling the bottom of one or both lungs;
* ``Cardiomegaly``: a wide heart (cardiothoracic ratio 0.52-0.64 instead of 0.38-0.50);
* ``Pneumothorax``: one lung collapsed towards its hilum (to 0.70-0.90 of its size): a dark rim without lung
  markings.

Masks, not images, are split (seeded, ``test_fraction`` of the usable masks to test), so test
images are drawn on lung shapes never seen in training (or pretraining, which reads the train
split). Masks with under ``min_foreground`` or over ``max_foreground`` lung pixels after resizing
(82 of the wheel's are empty, 2 cover too much) are left out and counted in both splits'
``excluded``; a member that does not decode stops the run naming it (``on_corrupt=error``) or is
counted as corrupt (``skip``). The images are built once per setting and cached
(:func:`dabs_rq.data.tensor_dataset.cached_tensors`), keyed by every setting, :data:`VERSION`
and the zip's size and mtime.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from dabs_rq.data.array_cache import source_identity
from dabs_rq.data.embedded.package_data import package_file
from dabs_rq.data.splits import check_split
from dabs_rq.data.storage import CORRUPT, CorruptDataError, CorruptLog, LeftOut, check_on_corrupt
from dabs_rq.data.tensor_dataset import TensorInputsDataset, cached_tensors, seeded_split
from dabs_rq.errors import UserError

FINDINGS = ("Nodule", "Effusion", "Cardiomegaly", "Pneumothorax")
MASKS_PACKAGE, MASKS_FILE = "torchxrayvision", "data/semantic_masks_v7labs_lungs.zip"
#: Bumped whenever :func:`render` draws differently, so no cache of an older drawing is read.
VERSION = 1
_CHUNK = 512  # images rendered at once (memory only: the drawing does not depend on it)


def default_masks_zip() -> Path:
    """The lung-mask zip inside the installed ``torchxrayvision`` wheel (found without importing it)."""
    return package_file(MASKS_PACKAGE, MASKS_FILE)


# --------------------------------------------------------------------------- masks


def _decode(data: bytes, size: int) -> np.ndarray:
    """One mask member -> ``[size, size]`` float32 lung fraction per pixel (box-filtered, 0..1)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L").resize((size, size), Image.BOX), dtype=np.float32) / 255.0


def read_masks(
    path: Path, size: int, min_foreground: float, max_foreground: float, corrupt: CorruptLog
) -> tuple[np.ndarray, list[str], LeftOut]:
    """The usable masks of the zip at ``path``, resized: ``([M, size, size] float32, member names, left out)``.

    Foreground = fraction of pixels over half lung after resizing; masks outside
    ``[min_foreground, max_foreground]`` are counted in the returned :class:`LeftOut`
    (split name ``""``: they are in no split), undecodable members go to ``corrupt``.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = sorted(n for n in archive.namelist() if not n.endswith("/"))
            blobs = [archive.read(n) for n in names]
    except (zipfile.BadZipFile, OSError) as err:
        raise CorruptDataError(path, f"not a readable zip of lung masks ({err})") from err
    if not names:
        raise CorruptDataError(path, "holds no mask images")
    left = LeftOut("lung masks", "")
    kept, masks = [], []

    def decode(blob: bytes) -> np.ndarray | Exception:
        try:
            return _decode(blob, size)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            return err

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        decoded = list(pool.map(decode, blobs))
    for name, mask in zip(names, decoded):
        if isinstance(mask, Exception):
            corrupt.add(CorruptDataError(f"{path}/{name}", f"not a decodable image ({mask})"))
            continue
        foreground, short = float((mask > 0.5).mean()), name.rsplit("/", 1)[-1]
        if foreground < min_foreground:
            left.add(f"lung masks under {min_foreground:.0%} foreground (empty or cut off; in no split)", 1, [short])
        elif foreground > max_foreground:
            left.add(f"lung masks over {max_foreground:.0%} foreground (in no split)", 1, [short])
        else:
            kept.append(name)
            masks.append(mask)
    corrupt.report(kept=len(kept))
    left.add(CORRUPT, len(corrupt), [Path(e.path).name for e in corrupt.errors])
    return np.stack(masks) if masks else np.zeros((0, size, size), np.float32), kept, left


# --------------------------------------------------------------------------- drawing


def _blur_matrix(size: int, sigma: float) -> Tensor:
    """``[size, size]`` matrix of a 1-D Gaussian blur with ``sigma`` pixels, edges mirrored (weights sum to 1 per row)."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1)
    weights = torch.exp(-0.5 * (taps.double() / sigma) ** 2)
    weights = weights / weights.sum()
    rows = torch.arange(size).view(-1, 1).expand(-1, len(taps))
    cols = rows + taps.view(1, -1)
    cols = torch.where(cols < 0, -cols - 1, torch.where(cols >= size, 2 * size - 1 - cols, cols)).clamp(0, size - 1)
    matrix = torch.zeros(size, size, dtype=torch.float64)
    matrix.index_put_((rows.reshape(-1), cols.reshape(-1)), weights.repeat(size), accumulate=True)
    return matrix.float()


def _blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``[N, S, S]`` with ``sigma`` in pixels, as two matrix products (fast on a CPU)."""
    matrix = _blur_matrix(x.shape[-1], sigma)
    return matrix @ x @ matrix.T


def _warp(masks: Tensor, theta: Tensor) -> Tensor:
    """``masks`` [N, S, S] resampled through the affine maps ``theta`` [N, 2, 3] (output -> input, [-1, 1] coords)."""
    grid = F.affine_grid(theta, [len(masks), 1, *masks.shape[1:]], align_corners=False)
    return F.grid_sample(masks[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]


def _extent(inside: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """First and last index (as fractions of the size, pixel centres) where ``inside`` [N, S, S] has any pixel along
    ``dim`` (1: rows -> x extent, 2: columns -> y extent)."""
    hit = inside.any(dim=dim)
    size = hit.shape[1]
    first = hit.int().argmax(dim=1)
    last = size - 1 - hit.flip(1).int().argmax(dim=1)
    return (first.float() + 0.5) / size, (last.float() + 0.5) / size


def _u(rng: np.random.RandomState, low: float, high: float, n: int) -> Tensor:
    """``n`` uniform draws as an ``[n, 1, 1]`` tensor (one value per image, broadcast over its pixels)."""
    return torch.from_numpy(rng.uniform(low, high, n)).float().view(n, 1, 1)


def _flag(labels: Tensor, finding: str) -> Tensor:
    return labels[:, FINDINGS.index(finding)].bool().view(-1, 1, 1)


@dataclass
class Chest:
    """One batch of patients: the placed lung masks and the thorax geometry read off them (image units: [0, 1])."""

    lung: Tensor  # [N, S, S] lung fraction per pixel
    sides: Tensor  # [N, 2, S, S] the lung left and right of the midline (image right = the patient's left)
    X: Tensor  # [1, 1, S] pixel-centre x
    Y: Tensor  # [1, S, 1] pixel-centre y
    cx: Tensor  # [N, 1, 1] midline between the outer lung edges
    top: Tensor  # [N, 1, 1] lung apices
    width: Tensor  # [N, 1, 1] thoracic width (outer lung edges)
    height: Tensor  # [N, 1, 1] apices to the lowest lung pixel

    @property
    def pixel(self) -> float:
        return 1.0 / self.lung.shape[-1]


def place_lungs(masks: Tensor, rng: np.random.RandomState) -> Chest:
    """The real lung shapes, each slightly moved, scaled and turned (no patient stands twice the same way)."""
    n, size = len(masks), masks.shape[-1]
    angle, scale = _u(rng, -0.07, 0.07, n).view(n), _u(rng, 0.93, 1.07, n).view(n)
    shift = torch.from_numpy(rng.uniform(-0.06, 0.06, (n, 2))).float()
    theta = torch.stack(
        [
            torch.stack([scale * torch.cos(angle), -scale * torch.sin(angle), shift[:, 0]], 1),
            torch.stack([scale * torch.sin(angle), scale * torch.cos(angle), shift[:, 1]], 1),
        ],
        1,
    )
    lung = _warp(masks, theta).clamp(0, 1)
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    X, Y = coords.view(1, 1, size), coords.view(1, size, 1)
    (x_min, x_max), (y_min, y_max) = _extent(lung > 0.5, 1), _extent(lung > 0.5, 2)
    x_min, x_max, y_min, y_max = (v.view(n, 1, 1) for v in (x_min, x_max, y_min, y_max))
    cx = (x_min + x_max) / 2
    right = (X >= cx).float()
    return Chest(
        lung,
        torch.stack([lung * (1 - right), lung * right], 1),
        X,
        Y,
        cx,
        y_min,
        (x_max - x_min).clamp_min(4 / size),
        (y_max - y_min).clamp_min(4 / size),
    )


def heart_shadow(chest: Chest, enlarged: Tensor, rng: np.random.RandomState) -> Tensor:
    """Heart ellipse below the hila, right of the midline: cardiothoracic ratio 0.38-0.50, or 0.52-0.64 if ``enlarged``."""
    n = len(enlarged)
    ratio = torch.where(enlarged, _u(rng, 0.52, 0.64, n), _u(rng, 0.38, 0.50, n))
    hx = chest.cx + chest.width * _u(rng, 0.02, 0.10, n)
    hy = chest.top + chest.height * _u(rng, 0.68, 0.78, n)
    r = ((chest.X - hx) / (ratio * chest.width / 2)) ** 2 + (
        (chest.Y - hy) / (chest.height * _u(rng, 0.16, 0.22, n))
    ) ** 2
    return torch.sigmoid((1 - r) / 0.1)


def effusion_fluid(chest: Chest, present: Tensor, rng: np.random.RandomState) -> Tensor:
    """Fluid opacity at the bottom of one lung (left, right) or both, rising laterally (a meniscus); 0 if absent."""
    n = len(present)
    side = rng.choice(3, n, p=[0.35, 0.35, 0.3])
    which = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])[side].view(n, 2, 1, 1)
    bottoms = torch.stack([_extent(chest.sides[:, s] > 0.5, 2)[1] for s in range(2)], 1).view(n, 2, 1, 1)
    depth = (chest.height * _u(rng, 0.10, 0.25, n)).view(n, 1, 1, 1)
    lateral = ((chest.X - chest.cx).abs() / (chest.width / 2))[:, None]  # 0 at the midline, 1 at the outer edges
    level = bottoms - depth * (1 + 0.6 * lateral)
    fluid = (torch.sigmoid((chest.Y[:, None] - level) / (1.5 * chest.pixel)) * chest.sides * which).sum(1).clamp(0, 1)
    return fluid * present * _u(rng, 0.55, 0.9, n)  # how opaque: a thin layer lets some air through


def collapse(chest: Chest, present: Tensor, rng: np.random.RandomState) -> tuple[Tensor, Tensor, Tensor]:
    """Pneumothorax: one lung shrunk towards its hilum to 0.70-0.90 of its size. Returns the air rim (no lung,
    no markings), the collapsed lung (denser) and its edge (the visible pleural line); zeros if absent."""
    n = len(present)
    side = torch.from_numpy(rng.randint(0, 2, n))
    one = chest.sides[torch.arange(n), side]
    hilum_x = 2 * (chest.cx.view(n) + torch.where(side == 1, 1.0, -1.0) * 0.15 * chest.width.view(n)) - 1
    hilum_y = 2 * (chest.top + 0.45 * chest.height).view(n) - 1
    c, zero = _u(rng, 0.70, 0.90, n).view(n), torch.zeros(n)
    shrink = torch.stack(
        [torch.stack([1 / c, zero, hilum_x * (1 - 1 / c)], 1), torch.stack([zero, 1 / c, hilum_y * (1 - 1 / c)], 1)], 1
    )
    collapsed = _warp(one, shrink).clamp(0, 1)
    return (one * (1 - collapsed) * present, one * collapsed * present, 4 * collapsed * (1 - collapsed) * one * present)


def nodules(chest: Chest, present: Tensor, rng: np.random.RandomState) -> Tensor:
    """1-3 round opacities (radius 4-6.5 % of the image) centred on random lung pixels; 0 if absent."""
    n, size = len(present), chest.lung.shape[-1]
    cumulative = np.cumsum((chest.lung > 0.5).flatten(1).double().numpy(), axis=1)
    count = torch.from_numpy(rng.randint(1, 4, n)).view(n, 1, 1)
    blob = torch.zeros(n, size, size)
    for k in range(3):
        picks = (rng.uniform(0, 1, n) * cumulative[:, -1])[:, None]
        where = torch.from_numpy((cumulative < picks).sum(1).clip(0, size * size - 1))
        nx = ((where % size).float() + 0.5).view(n, 1, 1) / size
        ny = ((where // size).float() + 0.5).view(n, 1, 1) / size
        radius, strength = _u(rng, 0.04, 0.065, n), _u(rng, 0.30, 0.45, n)
        blob += strength * torch.exp(-0.5 * ((chest.X - nx) ** 2 + (chest.Y - ny) ** 2) / radius**2) * (count > k)
    return blob * present


def render(masks: Tensor, labels: Tensor, rng: np.random.RandomState) -> Tensor:
    """Pseudo-radiographs ``[N, S, S]`` in [0, 1] (bright = dense) on lung ``masks`` [N, S, S] with ``labels``
    [N, 4] (:data:`FINDINGS` order). Every random choice is drawn from ``rng`` in a fixed order, whatever the
    labels (an absent finding is drawn and multiplied by 0), so images differ only where their labels do."""
    n, size = len(masks), masks.shape[-1]
    chest = place_lungs(masks, rng)
    X, Y, cx, width, height = chest.X, chest.Y, chest.cx, chest.width, chest.height
    body_r = ((X - cx) / (width * _u(rng, 0.58, 0.68, n))) ** 2 + (
        (Y - (chest.top + 0.55 * height)) / (0.95 * height)
    ) ** 2
    body = torch.sigmoid((1 - body_r) / 0.08)
    spine = torch.exp(-0.5 * ((X - cx) / (0.06 * width)) ** 2)
    thorax = (_blur(chest.lung, 3.0) * 2.5).clamp(0, 1)  # where ribs show
    period, bend, phase = height / _u(rng, 7.5, 9.5, n), _u(rng, 0.8, 1.6, n) / width, _u(rng, 0, 2 * math.pi, n)
    ribs = torch.cos(2 * math.pi * (Y - bend * (X - cx) ** 2) / period + phase).clamp_min(0) ** 3
    heart = heart_shadow(chest, _flag(labels, "Cardiomegaly"), rng)
    texture = _blur(torch.from_numpy(rng.standard_normal((n, size, size))).float(), 1.0)  # lung markings
    texture = texture / texture.std(dim=(1, 2), keepdim=True)
    fluid = effusion_fluid(chest, _flag(labels, "Effusion"), rng)
    gap, remaining, pleura = collapse(chest, _flag(labels, "Pneumothorax"), rng)
    blob = nodules(chest, _flag(labels, "Nodule"), rng)

    # densities add along the ray; air darkens where the lung is not hidden by heart or fluid
    air = 0.40 * _blur(chest.lung, 0.8) * (1 - 0.75 * heart) * (1 - fluid) * (1 - 0.3 * remaining) + 0.10 * gap
    markings = 0.04 * texture * chest.lung * (1 - 0.75 * heart) * (1 - (gap > 0.1).float())
    image = (
        0.04
        + 0.52 * body
        + 0.15 * spine * body
        + 0.08 * ribs * thorax
        + 0.10 * heart * body
        + 0.05 * fluid
        + 0.10 * pleura
        + markings
        + blob
        - air
    )
    image = _blur(image, 0.6)
    contrast, brightness = _u(rng, 0.85, 1.15, n), _u(rng, -0.06, 0.06, n)
    noise = _u(rng, 0.015, 0.035, n) * torch.from_numpy(rng.standard_normal((n, size, size))).float()
    return ((image - 0.35) * contrast + 0.35 + brightness + noise).clamp(0, 1)


def draw_images(masks: np.ndarray, mask_index: np.ndarray, labels: np.ndarray, seed: int) -> Tensor:
    """``[N, 1, S, S]`` float32 images, image i drawn on ``masks[mask_index[i]]`` with ``labels[i]``."""
    rng = np.random.RandomState(seed)
    chunks = []
    for start in range(0, len(mask_index), _CHUNK):
        part = slice(start, start + _CHUNK)
        chunks.append(render(torch.from_numpy(masks[mask_index[part]]), torch.from_numpy(labels[part]), rng))
    size = masks.shape[-1]
    return torch.cat(chunks)[:, None].float() if chunks else torch.zeros(0, 1, size, size)


# --------------------------------------------------------------------------- the reader


def _build(
    zip_path: Path,
    n_images: int,
    image_size: int,
    test_fraction: float,
    prevalence: float,
    min_foreground: float,
    max_foreground: float,
    seed: int,
    on_corrupt: str,
) -> dict:
    corrupt = CorruptLog("embedded_xray", "lung masks", on_corrupt)
    masks, names, left = read_masks(zip_path, image_size, min_foreground, max_foreground, corrupt)
    train_masks, test_masks = seeded_split(len(masks), test_fraction, seed)
    if len(train_masks) == 0 or len(test_masks) == 0:
        raise UserError(
            f"reader: {len(masks)} usable lung masks in {zip_path} leave no masks for one split "
            f"(test_fraction={test_fraction}); check reader.masks_zip or the foreground bounds"
        )
    rng = np.random.RandomState(seed)
    n_test = int(round(n_images * test_fraction))
    parts, images, labels = {}, [], []
    for split, pool, count in (("train", train_masks, n_images - n_test), ("test", test_masks, n_test)):
        # every mask of the pool used as evenly as possible, in a seeded order
        index = np.concatenate([rng.permutation(pool) for _ in range(-(-count // len(pool)))])[:count]
        found = (rng.uniform(size=(count, len(FINDINGS))) < prevalence).astype(np.int64)
        parts[split] = (index, found)
    for split in ("train", "test"):
        index, found = parts[split]
        images.append(draw_images(masks, index, found, seed + (1 if split == "train" else 2)))
        labels.append(torch.from_numpy(found))
    is_test = torch.cat([torch.zeros(len(labels[0]), dtype=torch.bool), torch.ones(len(labels[1]), dtype=torch.bool)])
    return {
        "images": (torch.cat(images) * 255).round().to(torch.uint8),  # 8 bits, as a PNG radiograph; 1/4 the disk
        "labels": torch.cat(labels),
        "mask": torch.from_numpy(np.concatenate([parts["train"][0], parts["test"][0]])),
        "is_test": is_test,
        "mask_names": names,
        "excluded": left.state(),
    }


def chest_xrays(
    split: str,
    cache_dir: Path,
    n_images: int = 5000,
    image_size: int = 64,
    test_fraction: float = 0.2,
    prevalence: float = 0.3,
    min_foreground: float = 0.08,
    max_foreground: float = 0.60,
    seed: int = 0,
    masks_zip: str | os.PathLike | None = None,
    on_corrupt: str = "error",
) -> TensorInputsDataset:
    """Dataset of ``([1, image_size, image_size] float32 in [0, 1],)`` -> ``[4]`` multi-hot :data:`FINDINGS`.

    ``n_images`` in all, ``round(n_images * test_fraction)`` of them in test, drawn on the test
    masks. ``masks_zip``: another zip of lung masks in the wheel's format (default: the installed
    ``torchxrayvision`` wheel's). The Dataset's ``excluded`` counts the masks left out.
    """
    check_split(split)
    check_on_corrupt(on_corrupt)
    if not 0 < test_fraction < 1:
        raise UserError(f"reader.test_fraction must be between 0 and 1, got {test_fraction}")
    if not 0 < round(n_images * test_fraction) < n_images:
        raise UserError(f"reader.n_images: {n_images} images leave none for one split (test_fraction={test_fraction})")
    zip_path = Path(masks_zip).expanduser() if masks_zip is not None else default_masks_zip()
    if not zip_path.is_file():
        raise UserError(f"reader.masks_zip: {zip_path} is not a file")
    settings = [
        VERSION,
        n_images,
        image_size,
        test_fraction,
        prevalence,
        min_foreground,
        max_foreground,
        seed,
        on_corrupt,
        source_identity(None, files=[zip_path]),
    ]
    key = hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:16]
    data = cached_tensors(
        Path(cache_dir) / f"embedded_xray_{image_size}px_{n_images}_{key}.pt",
        lambda: _build(
            zip_path, n_images, image_size, test_fraction, prevalence, min_foreground, max_foreground, seed, on_corrupt
        ),
    )
    keep = data["is_test"] if split == "test" else ~data["is_test"]
    dataset = TensorInputsDataset([data["images"][keep].float() / 255], data["labels"][keep])  # as ToTensor
    dataset.mask_index = data["mask"][keep]  # which usable mask (of mask_names, sorted) each image is drawn on
    dataset.mask_names = data["mask_names"]
    return LeftOut.from_state("embedded_xray", split, data["excluded"]).attach(dataset)
