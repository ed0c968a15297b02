"""Tiny copies of DABS's real datasets, written in their real on-disk formats under a test data root.

Layouts (under ``<data_root>``): ``pamap2/PAMAP2_Dataset/Protocol/subject10X.dat``,
``chexpert/CheXpert-v1.0-small/{train,valid}.csv`` + JPEGs, ``xray8/images/*.png`` +
``metadata.csv``, ``mscoco/annotations/*2017.json`` + ``{train,val}2017/*.jpg``,
``vqa/`` VQA v1 json + COCO 2014 captions json + ``{train,val}2014/*.jpg``, and the tiny
bert tokenizer at ``tokenizers/bert-base-uncased``. Values are chosen so tests can check
labels against inputs (e.g. the PAMAP2 hand temperature channel equals the activity id).
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

PAMAP2_SUBJECTS = (101, 102, 103, 104, 105, 106, 107, 108, 109)
PAMAP2_ACTIVITIES = (1, 2, 3, 4, 5, 6, 7, 12, 13, 16, 24)
PAMAP2_COLUMNS = 54
CHEXPERT_OBSERVATIONS = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]
NIH_FINDINGS = [
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
]
# COCO's 80 category ids (1..90 with gaps), so label mapping is exercised on the real ids.
COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def write_pamap2(data_root: Path, rows_per_activity: int = 340, seed: int = 0) -> Path:
    """``subject101..109.dat``: transient rows, then each listed activity in a block, ``NaN`` gaps.

    Heart rate is a ramp (0.5 per row) recorded only every 4th row (as the ~9 Hz monitor);
    channel ``hand0`` (temperature) equals the activity id, ``chest0`` the subject id; a few
    IMU values are NaN.
    """
    rng = np.random.default_rng(seed)
    folder = Path(data_root) / "pamap2" / "PAMAP2_Dataset" / "Protocol"
    folder.mkdir(parents=True, exist_ok=True)
    for subject in PAMAP2_SUBJECTS:
        activity = np.concatenate(
            [np.zeros(10), *(np.full(rows_per_activity, a) for a in PAMAP2_ACTIVITIES), np.zeros(10)]
        )
        n = len(activity)
        table = rng.normal(size=(n, PAMAP2_COLUMNS)).round(5)
        table[:, 0] = np.arange(n) / 100 + 5.64  # timestamp (s)
        table[:, 1] = activity
        table[:, 2] = 80 + 0.5 * np.arange(n)
        table[np.arange(n) % 4 != 1, 2] = np.nan  # heart rate only every 4th row, first row NaN
        table[:, 3] = activity  # hand temperature := activity id (lets tests check labels)
        table[:, 20] = subject  # chest temperature := subject id (lets tests check the split)
        table[rng.choice(n, size=20, replace=False), 10] = np.nan  # dropped IMU samples
        pd.DataFrame(table).to_csv(
            folder / f"subject{subject}.dat", sep=" ", header=False, index=False, na_rep="NaN", float_format="%.6g"
        )
    return folder


def _gray_image(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0]), dtype=np.uint8), mode="L")


def _rgb_image(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8), mode="RGB")


def write_chexpert(data_root: Path, n_train: int = 24, n_valid: int = 8, seed: int = 0) -> Path:
    """``CheXpert-v1.0-small/{train,valid}.csv`` (real columns, blank/1.0/0.0/-1.0) and small JPEGs."""
    rng = np.random.default_rng(seed)
    base = Path(data_root) / "chexpert" / "CheXpert-v1.0-small"
    for split, count in (("train", n_train), ("valid", n_valid)):
        rows = []
        for i in range(count):
            view = "frontal" if i % 3 else "lateral"
            rel = f"CheXpert-v1.0-small/{split}/patient{64541 + i:05d}/study1/view1_{view}.jpg"
            path = Path(data_root) / "chexpert" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            _gray_image(rng, (40, 32)).save(path, quality=95)
            labels = rng.choice([1.0, 0.0, -1.0, np.nan], size=len(CHEXPERT_OBSERVATIONS))
            if split == "valid":  # both classes of every label appear in the evaluation split
                labels = np.where(np.arange(len(labels)) % 2 == i % 2, 1.0, 0.0)
            rows.append(
                [
                    rel,
                    "Female" if i % 2 else "Male",
                    40 + i,
                    view.capitalize(),
                    "AP" if view == "frontal" else np.nan,
                    *labels,
                ]
            )
        columns = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_OBSERVATIONS]
        pd.DataFrame(rows, columns=columns).to_csv(base / f"{split}.csv", index=False)
    return base


def write_xray8(data_root: Path, count: int = 40, seed: int = 0) -> Path:
    """``images/000000NN_000.png`` (8-bit grayscale, one RGBA like a few NIH files) and ``metadata.csv``.

    Findings are random, except that the images DABS's split puts in the test set (the last
    10 % after a ``RandomState(42)`` shuffle) alternate so each pathology has both classes there.
    """
    rng = np.random.default_rng(seed)
    base = Path(data_root) / "xray8"
    (base / "images").mkdir(parents=True, exist_ok=True)
    names = [f"{i + 1:08d}_000.png" for i in range(count)]
    shuffled = np.array(names)
    np.random.RandomState(42).shuffle(shuffled)
    test = list(shuffled[int(count * 0.9) :])
    rows = []
    for i, name in enumerate(names):
        image = _gray_image(rng, (36, 36))
        (image.convert("RGBA") if i == 3 else image).save(base / "images" / name)
        if name in test:
            findings = [f for k, f in enumerate(NIH_FINDINGS[:8]) if (k + test.index(name)) % 2 == 0]
        else:
            findings = sorted(rng.choice(NIH_FINDINGS, size=int(rng.integers(0, 4)), replace=False))
        rows.append([name, "|".join(findings) or "No Finding", 0, i + 1, 50, "M", "PA", 1024, 1024, 0.143, 0.143])
    (base / "images" / "README.txt").write_text("not an image")  # non-PNG files are ignored
    columns = [
        "Image Index",
        "Finding Labels",
        "Follow-up #",
        "Patient ID",
        "Patient Age",
        "Patient Gender",
        "View Position",
        "OriginalImage[Width",
        "Height]",
        "OriginalImagePixelSpacing[x",
        "y]",
    ]
    pd.DataFrame(rows, columns=columns).to_csv(base / "metadata.csv", index=False)
    return base


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _dump(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_mscoco(data_root: Path, n_train: int = 12, n_val: int = 6, seed: int = 0) -> Path:
    """COCO 2017 captions/instances json and ``%012d.jpg`` images.

    Each image has two captions ("a dog" then "the cat is on the mat": the last must win) and
    two instances (the last one's category is the label); the last image has no instance.
    """
    rng = np.random.default_rng(seed)
    base = Path(data_root) / "mscoco"
    categories = [{"supercategory": "thing", "id": c, "name": f"category {c}"} for c in COCO_CATEGORY_IDS]
    for part, count in (("train2017", n_train), ("val2017", n_val)):
        images, captions, instances = [], [], []
        for i in range(count):
            image_id = 1000 * (part == "val2017") + 7 * i + 9
            file_name = f"{image_id:012d}.jpg"
            _rgb_image(rng, (64, 48) if i % 2 else (48, 64)).save(_mkdir(base / part) / file_name, quality=95)
            images.append({"license": 1, "file_name": file_name, "height": 48, "width": 64, "id": image_id})
            captions += [
                {"image_id": image_id, "id": 2 * image_id, "caption": "a dog"},
                {"image_id": image_id, "id": 2 * image_id + 1, "caption": "the cat is on the mat"},
            ]
            if i < count - 1:
                for k, category in enumerate((COCO_CATEGORY_IDS[0], COCO_CATEGORY_IDS[i % 80 + 1])):
                    instances.append(
                        {
                            "segmentation": [[1, 1, 5, 1, 5, 5]],
                            "area": 8.0,
                            "iscrowd": 0,
                            "image_id": image_id,
                            "bbox": [1, 1, 4, 4],
                            "category_id": category,
                            "id": 10 * image_id + k,
                        }
                    )
        info = {"description": "COCO 2017 Dataset (test fixture)", "year": 2017}
        _dump(
            base / "annotations" / f"captions_{part}.json",
            {"info": info, "licenses": [], "images": images, "annotations": captions},
        )
        _dump(
            base / "annotations" / f"instances_{part}.json",
            {"info": info, "licenses": [], "images": images, "annotations": instances, "categories": categories},
        )
    return base


VQA_QUESTIONS = ["what color is the dog", "is the cat on the mat", "what is on the mat"]
VQA_CHOICES = ["red", "blue", "yes", "no", "dog", "cat"]


def write_vqa(data_root: Path, n_train: int = 8, n_val: int = 4, seed: int = 0) -> Path:
    """VQA v1 multiple-choice json (questions, annotations) + COCO 2014 captions json + images.

    Three questions per image; the gold answer of every image's third question is not among
    its choices (DABS drops those), so each image contributes two examples.
    """
    rng = np.random.default_rng(seed)
    base = Path(data_root) / "vqa"
    for part, count in (("train2014", n_train), ("val2014", n_val)):
        images, questions, annotations = [], [], []
        for i in range(count):
            image_id = 500000 * (part == "val2014") + 13 * i + 1
            file_name = f"COCO_{part}_{image_id:012d}.jpg"
            _rgb_image(rng, (64, 40)).save(_mkdir(base / part) / file_name, quality=95)
            images.append({"license": 1, "file_name": file_name, "height": 40, "width": 64, "id": image_id})
            for k, text in enumerate(VQA_QUESTIONS):
                question_id = 10 * image_id + k
                gold = VQA_CHOICES[(i + k) % len(VQA_CHOICES)]
                choices = VQA_CHOICES if k < 2 else [c for c in VQA_CHOICES if c != gold]
                questions.append(
                    {"image_id": image_id, "question": text, "multiple_choices": choices, "question_id": question_id}
                )
                annotations.append(
                    {
                        "question_type": "what",
                        "multiple_choice_answer": gold,
                        "answers": [
                            {"answer": gold, "answer_confidence": "yes", "answer_id": j + 1} for j in range(10)
                        ],
                        "image_id": image_id,
                        "answer_type": "other",
                        "question_id": question_id,
                    }
                )
        _dump(
            base / "annotations" / f"captions_{part}.json",
            {
                "info": {},
                "licenses": [],
                "images": images,
                "annotations": [{"image_id": im["id"], "id": im["id"], "caption": "a dog"} for im in images],
            },
        )
        _dump(
            base / f"mscoco_{part}_annotations.json",
            {"info": {}, "license": {}, "data_subtype": part, "data_type": "mscoco", "annotations": annotations},
        )
        _dump(
            base / f"MultipleChoice_mscoco_{part}_questions.json",
            {
                "info": {},
                "license": {},
                "task_type": "Multiple-Choice",
                "data_type": "mscoco",
                "data_subtype": part,
                "num_choices": len(VQA_CHOICES),
                "questions": questions,
            },
        )
    return base


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on localhost (download code is tested without internet); yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
