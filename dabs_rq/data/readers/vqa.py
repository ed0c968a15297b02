"""Captioned images as DABS reads them: MS-COCO 2017 captions (pretraining) and VQA v1 (transfer).

Both give ``(image [3, 224, 224] float32 in [0, 1], token ids [32] int32)`` with DABS's
image transform ``Resize((640, 480))`` -> ``CenterCrop(480)`` -> ``Resize((224, 224))`` ->
``ToTensor()`` (no normalisation) and ``bert-base-uncased`` ids padded/truncated to 32
(tokenizer from ``<data_root>/tokenizers/`` or the hub, see
:mod:`dabs_rq.data.readers.tokenize`).

* **MS-COCO** (``train2017`` / ``val2017``): one caption per image, the *last* one of
  ``captions_*2017.json`` (DABS builds a dict); label = category (0..79, in the order of
  ``categories``) of the *last* instance annotation of the image; images without instances
  are dropped. The label only feeds DABS's online evaluator, unused here.
* **VQA v1** real-image multiple choice (``train2014`` / ``val2014``): input = image and the
  pair ``(question, answer)``; binary label "is the answer right": for each question whose
  ``multiple_choice_answer`` is among its ``multiple_choices`` (others are dropped), with
  probability 0.5 the answer is replaced by a random *other* choice (label 0), else kept
  (label 1). DABS draws this with the unseeded global ``random`` module, so labels differ per
  run; here ``answer_seed`` (default 0) seeds a generator per split, ``null`` restores the
  unseeded draw. Image file names come from COCO 2014's ``captions_*2014.json``.

Images are decoded once into the shared memory-mapped ``uint8`` cache
(:mod:`dabs_rq.data.image_cache`, one row per distinct image, ``decode_workers`` threads);
token ids and labels are cached per tokenizer (and per seed for VQA).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torchvision import transforms

from dabs_rq.data import image_cache
from dabs_rq.data.array_cache import cache_key
from dabs_rq.data.image_cache import FileImages, ImageDataset, list_digest
from dabs_rq.data.readers.tokenize import encode, load_tokenizer
from dabs_rq.data.tensor_dataset import cached_tensors

COCO_URL = "http://images.cocodataset.org"
VQA_URL = "https://s3.amazonaws.com/cvmlp/vqa/mscoco/vqa"


def coco_transform(size: Sequence[int] = (224, 224)) -> transforms.Compose:
    """DABS's captioned-image transform up to ``ToTensor``, after the cache's ``convert("RGB")``."""
    return transforms.Compose([transforms.Resize((640, 480)), transforms.CenterCrop((480, 480)),
                               transforms.Resize(tuple(size))])


def coco_dataset(files: Sequence[Path], cache: Path, image_size: Sequence[int], text: dict[str, Any],
                 workers: int | None = None) -> ImageDataset:
    """``files`` through :func:`coco_transform` into the shared cache, served with ``text``'s token ids and labels.

    ``text["rows"]``, where present, maps each example to its image (VQA: questions share images).
    """
    rows = text["rows"].numpy() if "rows" in text else None
    return image_cache.image_dataset(FileImages(files), len(files), coco_transform(image_size), text["labels"],
                                     cache=cache, shape=(3, *image_size), rows=rows, extra=[text["tokens"]],
                                     workers=workers)


def fetch(root: Path, components: Sequence[tuple[str, str]]) -> None:
    """Download and unpack each ``(url, result)`` archive whose ``result`` path is not in ``root`` yet."""
    from torchvision.datasets.utils import download_and_extract_archive

    for url, result in components:
        if not (Path(root) / result).exists():
            download_and_extract_archive(url, download_root=str(root), remove_finished=True)


def _load_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def tokenizer_digest(tokenizer: Any) -> str:
    """A digest of the vocabulary (part of a cache key: a different tokenizer, different ids)."""
    return cache_key(kind=type(tokenizer).__name__, vocab=sorted(tokenizer.get_vocab().items()))


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")


def coco_index(root: Path, part: str) -> tuple[list[int], list[str], list[int]]:
    """``(image ids, caption, label)`` of the images of ``part`` that have a caption and an instance."""
    instances = _load_json(Path(root) / "annotations" / f"instances_{part}.json")
    category = {c["id"]: i for i, c in enumerate(instances["categories"])}
    labels = {a["image_id"]: category[a["category_id"]] for a in instances["annotations"]}  # last one wins
    del instances
    captions_json = _load_json(Path(root) / "annotations" / f"captions_{part}.json")
    captions = {c["image_id"]: c["caption"] for c in captions_json["annotations"]}  # last one wins
    ids = [i for i in captions if i in labels]
    return ids, [captions[i] for i in ids], [labels[i] for i in ids]


def mscoco(
    split: str,
    cache_dir: Path,
    root: Path,
    download: bool = False,
    tokenizer: str = "bert-base-uncased",
    seq_len: int = 32,
    image_size: Sequence[int] = (224, 224),
    decode_workers: int | None = None,
) -> ImageDataset:
    """COCO 2017 ``train2017`` (train) / ``val2017`` (test): (image, caption ids) -> category 0..79."""
    _check_split(split)
    part = "train2017" if split == "train" else "val2017"
    if download:
        fetch(root, [(f"{COCO_URL}/annotations/annotations_trainval2017.zip", f"annotations/captions_{part}.json"),
                     (f"{COCO_URL}/zips/{part}.zip", part)])
    tok = load_tokenizer(tokenizer, Path(root).parent)

    def build() -> dict[str, torch.Tensor]:
        ids, captions, labels = coco_index(Path(root), part)
        return {"image_ids": torch.tensor(ids, dtype=torch.long), "labels": torch.tensor(labels, dtype=torch.long),
                "tokens": encode(tok, captions, max_length=seq_len)}

    key = cache_key(part=part, seq_len=seq_len, tokenizer=tokenizer_digest(tok))
    text = cached_tensors(Path(cache_dir) / "mscoco" / f"{split}-text-{key}.pt", build)
    files = [Path(root) / part / f"{i:012d}.jpg" for i in text["image_ids"].tolist()]
    cache = image_cache.cache_file(cache_dir, "mscoco", split, part=part, size=list(image_size),
                                   files=list_digest(files))
    return coco_dataset(files, cache, image_size, text, decode_workers)


def vqa_questions(root: Path, part: str) -> list[dict]:
    """Questions of ``part`` whose gold ``multiple_choice_answer`` is among its choices, in annotation order.

    Each: ``image_id``, ``file_name``, ``question``, ``answer`` (gold), ``choices``.
    """
    files = {image["id"]: image["file_name"]
             for image in _load_json(Path(root) / "annotations" / f"captions_{part}.json")["images"]}
    questions = {q["question_id"]: q
                 for q in _load_json(Path(root) / f"MultipleChoice_mscoco_{part}_questions.json")["questions"]}
    kept = []
    for ann in _load_json(Path(root) / f"mscoco_{part}_annotations.json")["annotations"]:
        question = questions[ann["question_id"]]
        if ann["multiple_choice_answer"] in question["multiple_choices"]:
            kept.append({"image_id": ann["image_id"], "file_name": files[ann["image_id"]],
                         "question": question["question"], "answer": ann["multiple_choice_answer"],
                         "choices": question["multiple_choices"]})
    return kept


def draw_answers(questions: Sequence[dict], rng: random.Random) -> tuple[list[str], list[int]]:
    """DABS's binary task: per question, p=0.5 a random wrong choice (label 0), else the gold answer (1)."""
    answers, labels = [], []
    for q in questions:
        if rng.random() < 0.5:
            answers.append(rng.choice([c for c in q["choices"] if c != q["answer"]]))
            labels.append(0)
        else:
            answers.append(q["answer"])
            labels.append(1)
    return answers, labels


def vqa(
    split: str,
    cache_dir: Path,
    root: Path,
    download: bool = False,
    tokenizer: str = "bert-base-uncased",
    seq_len: int = 32,
    answer_seed: int | None = 0,
    image_size: Sequence[int] = (224, 224),
    decode_workers: int | None = None,
) -> ImageDataset:
    """VQA v1 multiple choice, ``train2014`` (train) / ``val2014`` (test): (image, question+answer ids) -> 0/1.

    ``answer_seed``: the swap draws come from ``random.Random("<seed>:<split>")``; ``None``
    draws unseeded (DABS), new labels on every load (then token ids are not cached).
    """
    _check_split(split)
    part = "train2014" if split == "train" else "val2014"
    name = part[:-4].capitalize()
    if download:
        fetch(root, [(f"{COCO_URL}/annotations/annotations_trainval2014.zip", f"annotations/captions_{part}.json"),
                     (f"{COCO_URL}/zips/{part}.zip", part),
                     (f"{VQA_URL}/Annotations_{name}_mscoco.zip", f"mscoco_{part}_annotations.json"),
                     (f"{VQA_URL}/Questions_{name}_mscoco.zip", f"MultipleChoice_mscoco_{part}_questions.json")])
    tok = load_tokenizer(tokenizer, Path(root).parent)

    def build() -> dict[str, Any]:
        questions = vqa_questions(Path(root), part)
        rng = random.Random(f"{answer_seed}:{split}") if answer_seed is not None else random.Random()
        answers, labels = draw_answers(questions, rng)
        image_ids = sorted({q["image_id"] for q in questions})
        file_of = {q["image_id"]: q["file_name"] for q in questions}
        return {"tokens": encode(tok, [q["question"] for q in questions], answers, max_length=seq_len),
                "labels": torch.tensor(labels, dtype=torch.long),
                "rows": torch.tensor(np.searchsorted(image_ids, [q["image_id"] for q in questions])),
                "files": [file_of[i] for i in image_ids]}

    if answer_seed is None:
        text = build()
    else:
        key = cache_key(part=part, seq_len=seq_len, seed=answer_seed, tokenizer=tokenizer_digest(tok))
        text = cached_tensors(Path(cache_dir) / "vqa" / f"{split}-text-{key}.pt", build)
    files = [Path(root) / part / f for f in text["files"]]
    cache = image_cache.cache_file(cache_dir, "vqa", split, part=part, size=list(image_size),
                                   files=list_digest(text["files"]))
    return coco_dataset(files, cache, image_size, text, decode_workers)
