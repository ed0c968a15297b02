"""Embedded chest X-rays: pseudo-radiographs drawn on lung masks, read from a zip in the wheel's format.

The fixture is a zip laid out like ``torchxrayvision/data/semantic_masks_v7labs_lungs.zip``: a folder entry
``semantic_masks_v7labs_lungs/`` and one 8-bit grayscale PNG per mask (0 = background, 255 = lung) whose name
ends in .png, .PNG, .jpg or .jpeg whatever its content (the wheel's names keep the traced X-ray's file name).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from dabs_rq.data.embedded import xray
from dabs_rq.data.storage import CORRUPT, CorruptDataError, CorruptLog
from dabs_rq.errors import UserError
from dabs_rq.run import run
from tests.conftest import compose_config

FOLDER = "semantic_masks_v7labs_lungs"
EXTENSIONS = (".png", ".jpg", ".jpeg", ".PNG")
UNDER = "lung masks under 8% foreground (empty or cut off; in no split)"
OVER = "lung masks over 60% foreground (in no split)"


def lung_mask(rng: np.random.RandomState) -> Image.Image:
    """Two lung-like ellipses on a non-square canvas (the wheel's masks are 156-5,623 px, any aspect ratio)."""
    w, h = int(rng.randint(90, 160)), int(rng.randint(90, 160))
    image = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(image)
    top, bottom = rng.uniform(0.08, 0.2) * h, rng.uniform(0.75, 0.92) * h
    for left, right in (
        (rng.uniform(0.08, 0.18), rng.uniform(0.40, 0.46)),
        (rng.uniform(0.54, 0.60), rng.uniform(0.82, 0.92)),
    ):
        draw.ellipse([left * w, top + rng.uniform(0, 0.05) * h, right * w, bottom], fill=255)
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_masks_zip(path: Path, n: int = 24, seed: int = 0, empty: int = 1, full: int = 1, corrupt: int = 0) -> Path:
    """A zip of ``n`` lung masks plus ``empty`` all-background, ``full`` all-lung and ``corrupt`` undecodable members."""
    rng = np.random.RandomState(seed)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{FOLDER}/", b"")
        for i in range(n):
            archive.writestr(f"{FOLDER}/case_{i}{EXTENSIONS[i % 4]}", png_bytes(lung_mask(rng)))
        for i in range(empty):
            archive.writestr(f"{FOLDER}/empty_{i}.jpg", png_bytes(Image.new("L", (120, 100), 0)))
        for i in range(full):
            archive.writestr(f"{FOLDER}/full_{i}.png", png_bytes(Image.new("L", (120, 100), 255)))
        for i in range(corrupt):
            archive.writestr(f"{FOLDER}/broken_{i}.jpeg", b"\x89PNG\r\n\x1a\n not really")
    return path


@pytest.fixture(scope="module")
def masks_zip(tmp_path_factory) -> Path:
    return write_masks_zip(tmp_path_factory.mktemp("xray") / "masks.zip")


def read(split: str, cache: Path, masks_zip: Path, **kwargs):
    return xray.chest_xrays(split, cache, masks_zip=str(masks_zip), **{"n_images": 200, "image_size": 32, **kwargs})


def test_fixture_zip_has_the_wheel_layout(masks_zip):
    names = zipfile.ZipFile(masks_zip).namelist()
    assert names[0] == f"{FOLDER}/" and all(n.startswith(f"{FOLDER}/") for n in names)
    assert {Path(n).suffix for n in names[1:]} == set(EXTENSIONS)


def test_images_labels_and_left_out_masks(masks_zip, tmp_path):
    train, test = read("train", tmp_path, masks_zip), read("test", tmp_path, masks_zip)
    assert (len(train), len(test)) == (160, 40)
    images = train.inputs[0]
    assert images.shape == (160, 1, 32, 32) and images.dtype == torch.float32
    assert 0 <= float(images.min()) and float(images.max()) <= 1 and float(images.std()) > 0.1
    assert torch.equal(images * 255, (images * 255).round())  # 8-bit pixels, as ToTensor of a PNG
    assert train.labels.shape == (160, 4) and set(train.labels.unique().tolist()) <= {0, 1}
    # the empty and the all-lung mask are in no split: counted in both splits' excluded
    assert train.excluded == test.excluded == {UNDER: 1, OVER: 1}
    assert len(list(tmp_path.glob("embedded_xray_32px_200_*.pt"))) == 1  # one cache for both splits


def test_masks_not_images_are_split(masks_zip, tmp_path):
    train, test = read("train", tmp_path, masks_zip), read("test", tmp_path, masks_zip)
    train_masks, test_masks = set(train.mask_index.tolist()), set(test.mask_index.tolist())
    assert not train_masks & test_masks  # test images are drawn on lung shapes training never saw
    assert len(train_masks | test_masks) == 24 and len(test_masks) == round(24 * 0.2)


def test_drawing_is_deterministic_given_the_seed(masks_zip, tmp_path):
    a, b = read("test", tmp_path / "a", masks_zip), read("test", tmp_path / "b", masks_zip)
    assert torch.equal(a.inputs[0], b.inputs[0]) and torch.equal(a.labels, b.labels)
    other = read("test", tmp_path / "c", masks_zip, seed=1)
    assert not torch.equal(a.inputs[0], other.inputs[0])


def test_images_differ_only_where_their_findings_do(masks_zip):
    masks, _, _ = xray.read_masks(masks_zip, 32, 0.08, 0.6, CorruptLog("masks", ""))
    normal = xray.draw_images(masks, np.zeros(4, np.int64), np.zeros((4, 4), np.int64), seed=3)
    for finding in range(4):
        labels = np.zeros((4, 4), np.int64)
        labels[:, finding] = 1
        sick = xray.draw_images(masks, np.zeros(4, np.int64), labels, seed=3)
        assert (sick - normal).abs().amax(dim=(1, 2, 3)).min() > 0.05, xray.FINDINGS[finding]
    assert torch.equal(normal, xray.draw_images(masks, np.zeros(4, np.int64), np.zeros((4, 4), np.int64), seed=3))


@pytest.mark.parametrize("prevalence", [0.3, 0.5])
def test_each_finding_has_the_asked_prevalence_independently(masks_zip, tmp_path, prevalence):
    labels = read("train", tmp_path, masks_zip, n_images=1000, prevalence=prevalence).labels.float()
    assert ((labels.mean(0) - prevalence).abs() < 0.05).all(), labels.mean(0)
    # independent findings: every pair co-occurs about as often as prevalence squared
    together = (labels.T @ labels / len(labels))[~torch.eye(4, dtype=torch.bool)]
    assert ((together - prevalence**2).abs() < 0.05).all(), together


def test_undecodable_masks_stop_the_run_or_are_counted(tmp_path):
    broken = write_masks_zip(tmp_path / "broken.zip", n=12, corrupt=1)
    with pytest.raises(
        CorruptDataError,
        match=r"broken\.zip/semantic_masks_v7labs_lungs/broken_0\.jpeg: not a "
        r"decodable image",
    ):
        read("train", tmp_path / "c1", broken)
    train = read("train", tmp_path / "c2", broken, on_corrupt="skip")
    assert train.excluded == {UNDER: 1, OVER: 1, CORRUPT: 1}
    assert "semantic_masks_v7labs_lungs/broken_0.jpeg" not in train.mask_names and len(train.mask_names) == 12


def test_unusable_zips_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match=r"2 usable lung masks in .* leave no masks for one split"):
        read("train", tmp_path / "c1", write_masks_zip(tmp_path / "two.zip", n=2))
    with pytest.raises(UserError, match=r"0 usable lung masks"):
        read("train", tmp_path / "c2", write_masks_zip(tmp_path / "empty.zip", n=0, empty=3))
    (tmp_path / "not.zip").write_text("hello")
    with pytest.raises(CorruptDataError, match=r"not\.zip: not a readable zip of lung masks"):
        read("train", tmp_path / "c3", tmp_path / "not.zip")
    with pytest.raises(UserError, match=r"reader\.masks_zip: .*missing\.zip is not a file"):
        read("train", tmp_path / "c4", tmp_path / "missing.zip")
    with pytest.raises(UserError, match=r"reader\.n_images: 2 images leave none for one split"):
        read("train", tmp_path / "c5", tmp_path / "not.zip", n_images=2)
    with pytest.raises(UserError, match=r"on_corrupt must be one of error, skip; got 'ignore'"):
        read("train", tmp_path / "c6", tmp_path / "not.zip", on_corrupt="ignore")


def test_every_finding_is_learnable_from_pixels_but_not_trivially(tmp_path):
    """A logistic regression on 4x4-pooled pixels, trained on images of 64 masks, tested on unseen masks."""
    masks = write_masks_zip(tmp_path / "many.zip", n=80, empty=0, full=0, seed=1)
    kwargs = {"n_images": 1200, "image_size": 64, "prevalence": 0.5}
    train, test = read("train", tmp_path, masks, **kwargs), read("test", tmp_path, masks, **kwargs)

    def pixels(dataset):
        return torch.nn.functional.avg_pool2d(dataset.inputs[0], 4).flatten(1).numpy()

    for i, finding in enumerate(xray.FINDINGS):
        model = LogisticRegression(C=1.0, max_iter=1000).fit(pixels(train), train.labels[:, i].numpy())
        auroc = roc_auc_score(test.labels[:, i].numpy(), model.decision_function(pixels(test)))
        assert 0.6 < auroc < 0.99, (finding, auroc)


def wheel_masks() -> Path | None:
    """The installed torchxrayvision wheel's mask zip, or None."""
    try:
        return xray.default_masks_zip()
    except FileNotFoundError:
        return None


@pytest.mark.skipif(wheel_masks() is None, reason="torchxrayvision (the wheel with the lung masks) is not installed")
def test_the_wheel_has_433_usable_masks_of_517():
    masks, names, left = xray.read_masks(wheel_masks(), 64, 0.08, 0.60, CorruptLog("masks", ""))
    assert masks.shape == (433, 64, 64) and len(names) == 433
    assert left.counts == {UNDER: 82, OVER: 2}


def test_tiny_pretrain_and_multilabel_auroc_transfer_run(tiny_run_overrides, masks_zip, tmp_path):
    reader = {"masks_zip": masks_zip, "n_images": 120}  # the YAMLs' 64x64 images, few of them
    overrides = [
        f"+dataset_overrides.{name}.reader.{key}={value}"
        for name in ("embedded_xray", "embedded_xray_findings")
        for key, value in reader.items()
    ]
    (record,) = run(compose_config([*tiny_run_overrides, "domain=embedded_xray", "algorithm=rq", *overrides]))
    assert record["dataset"] == "embedded_xray_findings" and record["domain"] == "Chest X-Rays (embedded)"
    assert record["metric"] == "auroc" and 0 <= record["value"] <= 100 and record["synthetic"] is True
    assert "only the lung geometry is real" in record["display_name"] and record["paper_name"] is None
    assert record["pretraining"]["steps"] == 3
    protocol = record["protocol"]
    assert (protocol["n_train"], protocol["n_test"]) == (96, 24) and protocol["task"]["num_outputs"] == 4
    assert protocol["excluded"] == {"train": {UNDER: 1, OVER: 1}, "test": {UNDER: 1, OVER: 1}}
