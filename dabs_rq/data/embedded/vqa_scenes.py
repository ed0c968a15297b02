"""CLEVR-like scenes with templated questions, generated offline (numpy + PIL), in DABS's VQA task form.

No installable package ships images with questions and answers, so the embedded default
generates them: a *scene* is 2-5 non-overlapping objects (3 shapes x 6 colours x 2 sizes) on a
grey background, drawn at 4x and box-filtered down to ``image_size`` (anti-aliased edges), with
a little colour jitter and pixel noise. Each scene gets ``questions_per_scene`` questions of
distinct :data:`TEMPLATES` (counting, existence, attribute queries, the leftmost object),
answered from the scene's objects.

DABS 1.0's VQA form, with the same two embedders (image patches, then token ids): the input is
``(image [3, H, W] float32 in [0, 1], [CLS] question [SEP] answer [SEP] ids [seq_len] int32)``,
the label 1 when the answer is right. Every question gives two rows, its right answer (1) and a
wrong answer of the same type (0), so labels are balanced. So that the candidate answer alone
says little (DABS's wrong answers are VQA's plausible multiple choices), each question first
picks an answer uniformly among the values its template takes in that scene, then a question
with that answer; and the wrong answer is drawn from the right answers the same question has
across all scenes (uniform over its type when it has no other). On held-out scenes a question-only
model is at chance (0.49) while the same model with a colour histogram of the image reaches 0.70
(``tests/test_embedded_vqa.py``): the image is needed.

Text uses a word vocabulary (:class:`~dabs_rq.data.word_vocab.WordVocabulary`) built from the
templates and answers, not from the data, so ids do not depend on the seed. Splits are by
scene (a seeded split of the scenes): no image is in both.

* ``pretrain`` task: the training scenes, each question with its right answer (a true caption,
  as MS-COCO pairs an image with a caption); label = template index, unused.
* ``answers`` task: the binary right/wrong-answer task on the ``train`` / ``test`` scenes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from dabs_rq.data.array_cache import cache_key
from dabs_rq.data.splits import check_split
from dabs_rq.data.tensor_dataset import TensorInputsDataset, cached_tensors, seeded_split
from dabs_rq.data.word_vocab import CLS, SEP, UNK, WordVocabulary, words

#: bumped when the generator changes what it draws (part of the cache key)
GENERATOR_VERSION = 1
SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (210, 40, 40),
    "green": (40, 170, 60),
    "blue": (45, 75, 225),
    "yellow": (230, 205, 40),
    "purple": (140, 55, 190),
    "cyan": (40, 195, 205),
}
#: side of an object's box at a 32-pixel image, scaled with ``image_size``
SIZES = {"small": 7, "big": 11}
BACKGROUND = (128, 128, 128)
NUMBERS = tuple(str(n) for n in range(6))
ANSWERS = {"number": NUMBERS, "yes_no": ("yes", "no"), "colour": tuple(COLOURS), "shape": SHAPES, "size": tuple(SIZES)}
#: name -> (question pattern, answer type); terse (at most 4 words) so that a pair fits 8 tokens
TEMPLATES = {
    "count_colour": ("how many {colour} objects", "number"),
    "count_shape": ("how many {shape}s", "number"),
    "exists_shape": ("is there a {shape}", "yes_no"),
    "exists_colour_shape": ("any {colour} {shape}", "yes_no"),
    "colour_of_size_shape": ("colour of {size} {shape}", "colour"),
    "shape_of_colour": ("shape of {colour} object", "shape"),
    "size_of_colour_shape": ("size of {colour} {shape}", "size"),
    "shape_of_leftmost": ("shape of leftmost object", "shape"),
    "colour_of_leftmost": ("colour of leftmost object", "colour"),
}
TASKS = ("pretrain", "answers")
#: the leftmost object must be left of the next one by this fraction of the image width
LEFTMOST_MARGIN = 1 / 16
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class SceneObject:
    """One object: its attributes and its box (left, top, side) in output pixels."""

    shape: str
    colour: str
    size: str
    left: int
    top: int
    side: int

    @property
    def centre_x(self) -> float:
        return self.left + self.side / 2


@dataclass(frozen=True)
class Question:
    """A question about one scene, its right answer and a wrong one of the same type."""

    scene: int
    template: str
    text: str
    answer: str
    wrong: str = ""


def _place(rng: np.random.Generator, n: int, image_size: int) -> list[SceneObject]:
    """``n`` objects whose boxes (plus a 1-pixel gap) do not overlap, by rejection; [] if they did not fit."""
    placed: list[SceneObject] = []
    for _ in range(n):
        shape, colour, size = SHAPES[rng.integers(3)], tuple(COLOURS)[rng.integers(6)], tuple(SIZES)[rng.integers(2)]
        side = round(SIZES[size] * image_size / 32)
        for _attempt in range(50):
            left, top = (int(v) for v in rng.integers(1, image_size - side, size=2))
            if all(
                left + side < o.left or o.left + o.side < left or top + side < o.top or o.top + o.side < top
                for o in placed
            ):
                placed.append(SceneObject(shape, colour, size, left, top, side))
                break
        else:
            return []
    return placed


def random_scene(rng: np.random.Generator, image_size: int = 32) -> list[SceneObject]:
    """2-5 non-overlapping objects of random shape, colour and size."""
    n = int(rng.integers(2, 6))
    while True:  # retried with the same count, so that crowded scenes are not rarer
        objects = _place(rng, n, image_size)
        if objects:
            return objects


def render(objects: list[SceneObject], image_size: int, rng: np.random.Generator) -> np.ndarray:
    """[3, image_size, image_size] uint8 RGB: shapes drawn at 4x, box-filtered down, jitter and noise added."""
    s = _SUPERSAMPLE
    canvas = Image.new("RGB", (image_size * s, image_size * s), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for o in objects:
        fill = tuple(int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in COLOURS[o.colour])
        x0, y0, x1, y1 = o.left * s, o.top * s, (o.left + o.side) * s - 1, (o.top + o.side) * s - 1
        if o.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif o.shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=fill)
    small = np.asarray(canvas.resize((image_size, image_size), Image.BOX), dtype=np.float32)
    noisy = small + rng.normal(0.0, 3.0, small.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8).transpose(2, 0, 1)


def _leftmost(objects: list[SceneObject], image_size: int) -> SceneObject | None:
    """The leftmost object, when it is clearly left of the next one (else the question is ambiguous)."""
    first, second = sorted(objects, key=lambda o: o.centre_x)[:2]
    return first if second.centre_x - first.centre_x >= LEFTMOST_MARGIN * image_size else None


def candidates(objects: list[SceneObject], image_size: int) -> dict[str, list[tuple[str, str]]]:
    """Every askable (question, right answer) of each template; attribute queries only where unambiguous."""
    out: dict[str, list[tuple[str, str]]] = {}

    def unique(**attrs: str) -> SceneObject | None:
        found = [o for o in objects if all(getattr(o, k) == v for k, v in attrs.items())]
        return found[0] if len(found) == 1 else None

    def add(template: str, answer: str, **params: str) -> None:
        out.setdefault(template, []).append((TEMPLATES[template][0].format(**params), answer))

    for colour in COLOURS:
        add("count_colour", str(sum(o.colour == colour for o in objects)), colour=colour)
        if (o := unique(colour=colour)) is not None:
            add("shape_of_colour", o.shape, colour=colour)
        for shape in SHAPES:
            present = any(o.colour == colour and o.shape == shape for o in objects)
            add("exists_colour_shape", "yes" if present else "no", colour=colour, shape=shape)
            if (o := unique(colour=colour, shape=shape)) is not None:
                add("size_of_colour_shape", o.size, colour=colour, shape=shape)
    for shape in SHAPES:
        add("count_shape", str(sum(o.shape == shape for o in objects)), shape=shape)
        add("exists_shape", "yes" if any(o.shape == shape for o in objects) else "no", shape=shape)
        for size in SIZES:
            if (o := unique(size=size, shape=shape)) is not None:
                add("colour_of_size_shape", o.colour, size=size, shape=shape)
    if (o := _leftmost(objects, image_size)) is not None:
        add("shape_of_leftmost", o.shape)
        add("colour_of_leftmost", o.colour)
    return out


def ask(scene: int, objects: list[SceneObject], k: int, image_size: int, rng: np.random.Generator) -> list[Question]:
    """``k`` questions of distinct templates; each picks its answer uniformly among the template's values here."""
    options = candidates(objects, image_size)
    names = [t for t in TEMPLATES if t in options]
    questions = []
    for t in rng.permutation(len(names))[:k]:
        template = names[int(t)]
        values = sorted({a for _, a in options[template]})
        answer = values[rng.integers(len(values))]
        texts = [q for q, a in options[template] if a == answer]
        questions.append(Question(scene, template, texts[rng.integers(len(texts))], answer))
    return questions


def add_wrong_answers(questions: list[Question], rng: np.random.Generator) -> list[Question]:
    """Each question with a wrong answer drawn from the right answers that question text has elsewhere
    (weighted by how often), or uniformly from its answer type when it never has another."""
    seen: dict[str, Counter] = {}
    for q in questions:
        seen.setdefault(q.text, Counter())[q.answer] += 1
    out = []
    for q in questions:
        others = sorted(a for a in seen[q.text] if a != q.answer)
        if others:
            weights = np.array([seen[q.text][a] for a in others], dtype=np.float64)
            wrong = others[rng.choice(len(others), p=weights / weights.sum())]
        else:
            pool = [a for a in ANSWERS[TEMPLATES[q.template][1]] if a != q.answer]
            wrong = pool[rng.integers(len(pool))]
        out.append(Question(q.scene, q.template, q.text, q.answer, wrong))
    return out


def generate(
    n_scenes: int, questions_per_scene: int = 2, image_size: int = 32, seed: int = 0
) -> tuple[list[list[SceneObject]], np.ndarray, list[Question]]:
    """``n_scenes`` scenes (objects), their images [n, 3, size, size] uint8 and their questions, from ``seed``."""
    rng = np.random.default_rng(seed)
    scenes, images, questions = [], [], []
    for s in range(n_scenes):
        objects = random_scene(rng, image_size)
        scenes.append(objects)
        images.append(render(objects, image_size, rng))
        questions.extend(ask(s, objects, questions_per_scene, image_size, rng))
    return scenes, np.stack(images), add_wrong_answers(questions, rng)


def vocabulary(vocab_size: int = 64) -> WordVocabulary:
    """Every word of the templates (all fillings) and of the answers; independent of the data."""
    texts = [
        pattern.format(colour=c, shape=s, size=z)
        for pattern, _ in TEMPLATES.values()
        for c in COLOURS
        for s in SHAPES
        for z in SIZES
    ]
    texts += [a for values in ANSWERS.values() for a in values]
    vocab = WordVocabulary.build(texts, vocab_size)
    missing = {w for t in texts for w in words(t)} - set(vocab.tokens)
    if missing:
        raise ValueError(f"vocab_size={vocab_size} leaves out {len(missing)} words of the templates; raise it")
    return vocab


def encode_pairs(vocab: WordVocabulary, questions: list[str], answers: list[str], seq_len: int) -> torch.Tensor:
    """[N, seq_len] int32 ids ``[CLS] question [SEP] answer [SEP]`` padded with [PAD] (DABS's pair form);
    a pair longer than ``seq_len`` is an error, never silently cut."""
    ids = torch.zeros(len(questions), seq_len, dtype=torch.int32)
    for row, (q, a) in enumerate(zip(questions, answers)):
        seq = [
            CLS,
            *(vocab.index.get(w, UNK) for w in words(q)),
            SEP,
            *(vocab.index.get(w, UNK) for w in words(a)),
            SEP,
        ]
        if len(seq) > seq_len:
            raise ValueError(f"seq_len={seq_len} is too short for {q!r} / {a!r} ({len(seq)} tokens)")
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.int32)
    return ids


def _build(
    n_scenes: int, questions_per_scene: int, image_size: int, seq_len: int, vocab_size: int, seed: int
) -> dict[str, torch.Tensor]:
    """Cached tensors: scene images, and two rows (right answer, wrong answer) per question."""
    _, images, questions = generate(n_scenes, questions_per_scene, image_size, seed)
    vocab = vocabulary(vocab_size)
    texts = [q.text for q in questions for _ in range(2)]
    answers = [a for q in questions for a in (q.answer, q.wrong)]
    template_ids = {t: i for i, t in enumerate(TEMPLATES)}
    return {
        "images": torch.from_numpy(images),
        "tokens": encode_pairs(vocab, texts, answers, seq_len),
        "labels": torch.tensor([1, 0] * len(questions), dtype=torch.long),
        "scene": torch.tensor([q.scene for q in questions for _ in range(2)], dtype=torch.long),
        "template": torch.tensor([template_ids[q.template] for q in questions for _ in range(2)], dtype=torch.long),
    }


def vqa_scenes(
    split: str,
    cache_dir: Path,
    task: str = "answers",
    n_scenes: int = 2500,
    questions_per_scene: int = 2,
    test_fraction: float = 0.2,
    image_size: int = 32,
    seq_len: int = 8,
    vocab_size: int = 64,
    seed: int = 0,
) -> TensorInputsDataset:
    """Dataset of ``(image [3, size, size] float32, ids [seq_len] int32) -> label`` (see module doc)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    check_split(split)
    key = cache_key(
        version=GENERATOR_VERSION,
        n_scenes=n_scenes,
        questions=questions_per_scene,
        image_size=image_size,
        seq_len=seq_len,
        vocab_size=vocab_size,
        seed=seed,
    )
    data = cached_tensors(
        Path(cache_dir) / f"vqa_scenes_{key}.pt",
        lambda: _build(n_scenes, questions_per_scene, image_size, seq_len, vocab_size, seed),
    )
    train_scenes, test_scenes = seeded_split(n_scenes, test_fraction, seed)
    chosen = torch.from_numpy(test_scenes if split == "test" else train_scenes)
    keep = torch.isin(data["scene"], chosen)
    labels = data["labels"]
    if task == "pretrain":
        keep &= labels == 1
        labels = data["template"]
    images = data["images"][data["scene"][keep]].float() / 255.0
    return TensorInputsDataset([images, data["tokens"][keep]], labels[keep])
