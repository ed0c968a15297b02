"""Captioned images as DABS reads them: MS-COCO 2017 captions (pretraining) and VQA v1 (transfer).

Both give ``(image [3, 224, 224] float32 in [0, 1], token ids [32] int32)`` with DABS's
image transform ``Resize((640, 480))`` -> ``CenterCrop(480)`` -> ``Resize((224, 224))`` ->
``ToTensor()`` (no normalisation) and ``bert-base-uncased`` ids padded/truncated to 32
(tokenizer from ``<data_root>/tokenizers/`` or the hub, see
:mod:`dabs_rq.data.readers.tokenize`).

* **MS-COCO** (``train2017`` / ``val2017``): one caption per image, the *last* one of
  ``captions_*2017.json`` (DABS builds a dict); label = category (0..79, in the order of
  ``categories``) of the *last* instance annotation of the image; images without instances
  are dropped. The label only feeds DABS's online evaluator, unused here. That is DABS 2.0's
  one row per image (``rows: per_image``, the default); ``rows: per_instance`` gives the DABS
  1.0 protocol the paper used, one row per instance annotation (see :func:`coco_index`).
* **VQA v1** real-image multiple choice (``train2014`` / ``val2014``): input = image and the
  pair ``(question, answer)``; binary label "is the answer right": for each question whose
  ``multiple_choice_answer`` is among its ``multiple_choices`` (others are dropped), with
  probability 0.5 the answer is replaced by a random *other* choice (label 0), else kept
  (label 1). DABS draws this with the unseeded global ``random`` module, so labels differ per
  run; here ``answer_seed`` (default 0) seeds a generator per split, ``null`` restores the
  unseeded draw. Image file names come from COCO 2014's ``captions_*2014.json``.

Images are decoded once into the shared memory-mapped ``uint8`` cache
(:mod:`dabs_rq.data.image_cache`, one row per distinct image, ``decode_workers`` threads);
token ids and labels are cached per tokenizer (and per seed for VQA). Every cache is keyed by
the resolved data root and the source files (json: size and mtime, or contents when small;
images: size and mtime), so pointing ``data_root`` at another copy, or replacing a file,
builds new caches instead of reading stale ones.

Both readers take ``on_corrupt`` (``"error"`` | ``"skip"``): a corrupt or truncated image, or a
malformed json entry (an annotation or question without a needed field, an unknown category,
question or image id, a gold answer with no other choice), stops the run with a
:class:`CorruptDataError` naming the file (and entry), or is left out (for COCO per image,
the whole image whose annotation is malformed, so that its "last annotation" label is never
a different one; per instance, that annotation's row) and counted in one summary line per
split. A json file that does not parse, or a COCO annotation that names no image, always
stops the run.

What DABS leaves out on purpose (COCO images without an instance annotation, or per instance the
annotations of images without a caption; VQA questions whose gold answer is not among their
choices) stays out, but is counted: one line per split, and the split Dataset's ``excluded``
(``{reason: count}``, with the entries and images skipped as corrupt), which the record stores.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import transforms

from dabs_rq.data import image_cache
from dabs_rq.data.array_cache import cache_key, source_identity
from dabs_rq.data.image_cache import FileImages, ImageDataset
from dabs_rq.data.readers.tokenize import encode, load_tokenizer
from dabs_rq.data.splits import check_split
from dabs_rq.data.storage import CORRUPT, CorruptDataError, CorruptLog, LeftOut
from dabs_rq.data.tensor_dataset import cached_tensors

COCO_URL = "http://images.cocodataset.org"
#: ``mscoco``'s ``rows``: one row per image (DABS 2.0) or per instance annotation (DABS 1.0, the paper's)
COCO_ROWS = ("per_image", "per_instance")
VQA_URL = "https://s3.amazonaws.com/cvmlp/vqa/mscoco/vqa"
#: ``excluded`` reasons of what DABS leaves out on purpose
NO_INSTANCE = "images without an instance annotation (as DABS)"
NO_CAPTION = "instance annotations of images without a caption (as DABS)"
GOLD_NOT_A_CHOICE = "questions whose gold answer is not a choice (as DABS)"


def coco_transform(size: Sequence[int] = (224, 224)) -> transforms.Compose:
    """DABS's captioned-image transform up to ``ToTensor``, after the cache's ``convert("RGB")``."""
    return transforms.Compose(
        [transforms.Resize((640, 480)), transforms.CenterCrop((480, 480)), transforms.Resize(tuple(size))]
    )


def coco_dataset(
    files: Sequence[Path],
    cache: Path,
    image_size: Sequence[int],
    text: dict[str, Any],
    workers: int | None = None,
    corrupt: CorruptLog | None = None,
) -> ImageDataset:
    """``files`` through :func:`coco_transform` into the shared cache, served with ``text``'s token ids and labels.

    ``text["rows"]``, where present, maps each example to its image (VQA: questions share images).
    ``text["corrupt"]``, where present, lists the json entries skipped when ``text`` was built;
    they are replayed into ``corrupt`` (the split's log), which also gets the corrupt images.
    """
    if corrupt is not None and text.get("corrupt"):
        corrupt.extend(CorruptDataError.from_record(r) for r in text["corrupt"])
    rows = text["rows"].numpy() if "rows" in text else None
    lines = len(corrupt) if corrupt is not None else 0
    dataset = image_cache.image_dataset(
        FileImages(files),
        len(files),
        coco_transform(image_size),
        text["labels"],
        cache=cache,
        shape=(3, *image_size),
        rows=rows,
        extra=[text["tokens"]],
        workers=workers,
        corrupt=corrupt,
    )
    left = LeftOut(corrupt.dataset, corrupt.split) if corrupt is not None else LeftOut(Path(cache).stem, "")
    for reason, count in (text.get("dropped") or {}).items():
        left.add(reason, int(count))
    left.add(f"entries and examples of images {CORRUPT}", lines + len(text["labels"]) - len(dataset))
    return left.attach(dataset)


def fetch(root: Path, components: Sequence[tuple[str, str]]) -> None:
    """Download and unpack (safely) each ``(url, result)`` archive whose ``result`` path is not in ``root`` yet."""
    from dabs_rq.data.storage import download_and_extract

    for url, result in components:
        if not (Path(root) / result).exists():
            download_and_extract(url, root, remove_finished=True)


def _load_json(path: Path) -> Any:
    """A json file; one that does not parse (e.g. truncated) is a :class:`CorruptDataError` naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptDataError(path, f"not valid json ({err})") from err


def _entries(data: Any, key: str, path: Path) -> list:
    """``data[key]``, a list of json objects, or a :class:`CorruptDataError`."""
    entries = data.get(key) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise CorruptDataError(path, f"no '{key}' list")
    return entries


def _fields(entry: Any, names: Sequence[str], path: Path, k: int, what: str) -> list:
    """The values of ``names`` in json object ``entry`` (number ``k`` of the file's ``what`` list), or an error."""
    if not isinstance(entry, dict) or any(entry.get(n) is None for n in names):
        missing = names if not isinstance(entry, dict) else [n for n in names if entry.get(n) is None]
        raise CorruptDataError(path, f"{what} has no {', '.join(missing)}", k, "entry")
    return [entry[n] for n in names]


def _records(corrupt: CorruptLog) -> list[list]:
    """The skipped entries as strings (storable in a ``weights_only`` tensor cache)."""
    return [[e.path, e.reason, "" if e.line is None else str(e.line), e.unit] for e in corrupt.errors]


def tokenizer_digest(tokenizer: Any) -> str:
    """A digest of the vocabulary (part of a cache key: a different tokenizer, different ids)."""
    return cache_key(kind=type(tokenizer).__name__, vocab=sorted(tokenizer.get_vocab().items()))


def _check_rows(rows: str) -> None:
    if rows not in COCO_ROWS:
        raise ValueError(f"rows must be one of {', '.join(COCO_ROWS)}; got {rows!r}")


def coco_index(
    root: Path,
    part: str,
    corrupt: CorruptLog | None = None,
    rows: str = "per_image",
    dropped: dict[str, int] | None = None,
) -> tuple[list[int], list[str], list[int]]:
    """``(image id, caption, label)`` of each example of ``part``: images that have a caption and an instance.

    The caption of an image is the last of its captions in ``captions_<part>.json`` (DABS
    builds a dict). ``rows``:

    * ``per_image`` (DABS 2.0): one example per image, in caption order, labelled with the
      category of the image's *last* instance annotation;
    * ``per_instance`` (DABS 1.0, the paper's protocol): one example per instance annotation
      whose image has a caption, in annotation order, labelled with that annotation's category
      (images repeat, once per annotation, always with the whole image and its caption). This
      implements that stated rule; DABS 1.0's own reader was not at hand to compare with (its
      leftover ``BOX_SCALE_RATIO`` hints that it may also have cropped to the box: not done here).

    Malformed entries go to ``corrupt`` (default: raise): per image, an image with a malformed
    instance or caption entry is left out; per instance, a malformed instance entry leaves out
    that row, a malformed caption entry all rows of its image. An instance entry without an
    image id always raises. ``dropped`` (filled) counts what DABS leaves out on purpose:
    :data:`NO_INSTANCE` (per image) or :data:`NO_CAPTION` (per instance).
    """
    dropped = dropped if dropped is not None else {}
    _check_rows(rows)
    corrupt = corrupt if corrupt is not None else CorruptLog("mscoco", part)
    instances_path = Path(root) / "annotations" / f"instances_{part}.json"
    instances = _load_json(instances_path)
    category = {}
    for k, c in enumerate(_entries(instances, "categories", instances_path), start=1):
        category[_fields(c, ["id"], instances_path, k, "category")[0]] = len(category)
    labels, broken, bad_caption = {}, {}, {}
    per_row: list[tuple[int, int | None, CorruptDataError | None]] = []  # (image, label, error) per annotation
    for k, a in enumerate(_entries(instances, "annotations", instances_path), start=1):
        image_id = a.get("image_id") if isinstance(a, dict) else None
        try:
            _fields(a, ["image_id", "category_id"], instances_path, k, "annotation")
            if a["category_id"] not in category:
                raise CorruptDataError(
                    instances_path, f"annotation has unknown category {a['category_id']!r}", k, "entry"
                )
        except CorruptDataError as err:
            if image_id is None:
                raise  # no way to tell which image's "last annotation" it was
            broken.setdefault(image_id, err)
            per_row.append((image_id, None, err))
            continue
        labels[image_id] = category[a["category_id"]]  # last one wins
        per_row.append((image_id, labels[image_id], None))
    del instances
    captions_path = Path(root) / "annotations" / f"captions_{part}.json"
    captions = {}
    for k, c in enumerate(_entries(_load_json(captions_path), "annotations", captions_path), start=1):
        image_id = c.get("image_id") if isinstance(c, dict) else None
        try:
            _fields(c, ["image_id", "caption"], captions_path, k, "caption")
        except CorruptDataError as err:
            if image_id is None:
                raise
            broken.setdefault(image_id, err)
            bad_caption.setdefault(image_id, err)
            continue
        captions[image_id] = c["caption"]  # last one wins
    if rows == "per_instance":
        ids, row_labels = [], []
        for image_id, label, err in per_row:
            if image_id not in captions:
                dropped[NO_CAPTION] = dropped.get(NO_CAPTION, 0) + 1
                continue
            if image_id in bad_caption or err is not None:
                corrupt.add(bad_caption.get(image_id, err))  # an image's caption error is counted once
                continue
            ids.append(image_id)
            row_labels.append(label)
        return ids, [captions[i] for i in ids], row_labels
    ids = []
    for i in captions:
        if i in broken:
            corrupt.add(broken[i])
        elif i in labels:
            ids.append(i)
        else:
            dropped[NO_INSTANCE] = dropped.get(NO_INSTANCE, 0) + 1
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
    on_corrupt: str = "error",
    rows: str = "per_image",
) -> ImageDataset:
    """COCO 2017 ``train2017`` (train) / ``val2017`` (test): (image, caption ids) -> category 0..79.

    ``rows``: ``per_image`` (default, DABS 2.0: one example per image) or ``per_instance``
    (DABS 1.0, the paper's protocol: one example per instance annotation), see :func:`coco_index`.
    Each distinct image is decoded and cached once either way.
    """
    check_split(split)
    _check_rows(rows)
    corrupt = CorruptLog("mscoco", split, on_corrupt)
    part = "train2017" if split == "train" else "val2017"
    if download:
        fetch(
            root,
            [
                (f"{COCO_URL}/annotations/annotations_trainval2017.zip", f"annotations/captions_{part}.json"),
                (f"{COCO_URL}/zips/{part}.zip", part),
            ],
        )
    tok = load_tokenizer(tokenizer, Path(root).parent)

    def build() -> dict[str, Any]:
        skipped = CorruptLog("mscoco", split, on_corrupt)
        dropped: dict[str, int] = {}
        ids, captions, labels = coco_index(Path(root), part, skipped, rows, dropped)
        text = {"labels": torch.tensor(labels, dtype=torch.long), "corrupt": _records(skipped), "dropped": dropped}
        if rows == "per_image":
            return {
                **text,
                "image_ids": torch.tensor(ids, dtype=torch.long),
                "tokens": encode(tok, captions, max_length=seq_len),
            }
        images = list(dict.fromkeys(ids))  # distinct images, first-annotation order; each caption encoded once
        index = {image_id: n for n, image_id in enumerate(images)}
        row_of = torch.tensor([index[i] for i in ids], dtype=torch.long)
        caption_of = dict(zip(ids, captions))
        tokens = encode(tok, [caption_of[i] for i in images], max_length=seq_len)
        return {**text, "image_ids": torch.tensor(images, dtype=torch.long), "rows": row_of, "tokens": tokens[row_of]}

    annotations = [Path(root) / "annotations" / f"{kind}_{part}.json" for kind in ("instances", "captions")]
    # skipping keeps other entries than stopping would: its own cache
    key = cache_key(
        part=part,
        seq_len=seq_len,
        tokenizer=tokenizer_digest(tok),
        rows=rows,
        counts_dropped=True,
        source=source_identity(root, tables=annotations),
        **({"on_corrupt": "skip"} if corrupt.skip else {}),
    )
    text = cached_tensors(Path(cache_dir) / "mscoco" / f"{split}-text-{key}.pt", build)
    files = [Path(root) / part / f"{i:012d}.jpg" for i in text["image_ids"].tolist()]
    cache = image_cache.cache_file(
        cache_dir, "mscoco", split, part=part, size=list(image_size), files=source_identity(root, files=files)
    )
    return coco_dataset(files, cache, image_size, text, decode_workers, corrupt)


def vqa_questions(
    root: Path, part: str, corrupt: CorruptLog | None = None, dropped: dict[str, int] | None = None
) -> list[dict]:
    """Questions of ``part`` whose gold ``multiple_choice_answer`` is among its choices, in annotation order.

    Each: ``image_id``, ``file_name``, ``question``, ``answer`` (gold), ``choices``. A
    malformed annotation, question or image entry (a needed field missing, an unknown
    question or image id, no choice but the gold answer) goes to ``corrupt`` (default: raise)
    and its question is left out. ``dropped`` (filled) counts the well-formed questions whose gold
    answer is not a choice (:data:`GOLD_NOT_A_CHOICE`), which DABS leaves out.
    """
    corrupt = corrupt if corrupt is not None else CorruptLog("vqa", part)
    dropped = dropped if dropped is not None else {}
    captions_path = Path(root) / "annotations" / f"captions_{part}.json"
    questions_path = Path(root) / f"MultipleChoice_mscoco_{part}_questions.json"
    annotations_path = Path(root) / f"mscoco_{part}_annotations.json"
    files, questions = {}, {}
    for k, image in enumerate(_entries(_load_json(captions_path), "images", captions_path), start=1):
        try:
            image_id, file_name = _fields(image, ["id", "file_name"], captions_path, k, "image")
        except CorruptDataError as err:
            corrupt.add(err)
            continue
        files[image_id] = file_name
    for k, q in enumerate(_entries(_load_json(questions_path), "questions", questions_path), start=1):
        try:
            _fields(q, ["question_id", "question", "multiple_choices"], questions_path, k, "question")
            if not isinstance(q["multiple_choices"], list):
                raise CorruptDataError(questions_path, "question's multiple_choices is not a list", k, "entry")
        except CorruptDataError as err:
            corrupt.add(err)
            continue
        questions[q["question_id"]] = q
    kept = []
    for k, ann in enumerate(_entries(_load_json(annotations_path), "annotations", annotations_path), start=1):
        try:
            question_id, image_id, gold = _fields(
                ann, ["question_id", "image_id", "multiple_choice_answer"], annotations_path, k, "annotation"
            )
            if question_id not in questions:
                raise CorruptDataError(
                    annotations_path, f"annotation's question {question_id} is not in {questions_path.name}", k, "entry"
                )
            if image_id not in files:
                raise CorruptDataError(
                    annotations_path, f"annotation's image {image_id} is not in {captions_path.name}", k, "entry"
                )
            question = questions[question_id]
            if gold in question["multiple_choices"] and all(c == gold for c in question["multiple_choices"]):
                raise CorruptDataError(
                    annotations_path, f"question {question_id} has no choice but the gold answer", k, "entry"
                )
        except CorruptDataError as err:
            corrupt.add(err)
            continue
        if gold in question["multiple_choices"]:
            kept.append(
                {
                    "image_id": image_id,
                    "file_name": files[image_id],
                    "question": question["question"],
                    "answer": gold,
                    "choices": question["multiple_choices"],
                }
            )
        else:
            dropped[GOLD_NOT_A_CHOICE] = dropped.get(GOLD_NOT_A_CHOICE, 0) + 1
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
    on_corrupt: str = "error",
) -> ImageDataset:
    """VQA v1 multiple choice, ``train2014`` (train) / ``val2014`` (test): (image, question+answer ids) -> 0/1.

    ``answer_seed``: the swap draws come from ``random.Random("<seed>:<split>")``; ``None``
    draws unseeded (DABS), new labels on every load (then token ids are not cached).
    """
    check_split(split)
    corrupt = CorruptLog("vqa", split, on_corrupt)
    part = "train2014" if split == "train" else "val2014"
    name = part[:-4].capitalize()
    if download:
        fetch(
            root,
            [
                (f"{COCO_URL}/annotations/annotations_trainval2014.zip", f"annotations/captions_{part}.json"),
                (f"{COCO_URL}/zips/{part}.zip", part),
                (f"{VQA_URL}/Annotations_{name}_mscoco.zip", f"mscoco_{part}_annotations.json"),
                (f"{VQA_URL}/Questions_{name}_mscoco.zip", f"MultipleChoice_mscoco_{part}_questions.json"),
            ],
        )
    tok = load_tokenizer(tokenizer, Path(root).parent)

    def build() -> dict[str, Any]:
        skipped = CorruptLog("vqa", split, on_corrupt)
        dropped: dict[str, int] = {}
        questions = vqa_questions(Path(root), part, skipped, dropped)
        rng = random.Random(f"{answer_seed}:{split}") if answer_seed is not None else random.Random()
        answers, labels = draw_answers(questions, rng)
        image_ids = sorted({q["image_id"] for q in questions})
        file_of = {q["image_id"]: q["file_name"] for q in questions}
        return {
            "tokens": encode(tok, [q["question"] for q in questions], answers, max_length=seq_len),
            "labels": torch.tensor(labels, dtype=torch.long),
            "rows": torch.tensor(np.searchsorted(image_ids, [q["image_id"] for q in questions])),
            "files": [file_of[i] for i in image_ids],
            "corrupt": _records(skipped),
            "dropped": dropped,
        }

    if answer_seed is None:
        text = build()
    else:
        sources = [
            Path(root) / "annotations" / f"captions_{part}.json",
            Path(root) / f"MultipleChoice_mscoco_{part}_questions.json",
            Path(root) / f"mscoco_{part}_annotations.json",
        ]
        key = cache_key(
            part=part,
            seq_len=seq_len,
            seed=answer_seed,
            tokenizer=tokenizer_digest(tok),
            counts_dropped=True,
            source=source_identity(root, tables=sources),
            **({"on_corrupt": "skip"} if corrupt.skip else {}),
        )
        text = cached_tensors(Path(cache_dir) / "vqa" / f"{split}-text-{key}.pt", build)
    files = [Path(root) / part / f for f in text["files"]]
    cache = image_cache.cache_file(
        cache_dir, "vqa", split, part=part, size=list(image_size), files=source_identity(root, files=files)
    )
    return coco_dataset(files, cache, image_size, text, decode_workers, corrupt)
