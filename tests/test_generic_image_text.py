"""Generic image-text reader: a brand-new captioned-image dataset (JSONL of image + text) from YAML alone."""

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
from dabs_rq.data.word_vocab import CLS, PAD, SEP, UNK, WordVocabulary
from tests.conftest import load_split
from tests.generic_helpers import public_run_adds_row, write_domain

SEQ_LEN, VOCAB = 12, 40
INPUTS = [
    {"_target_": "dabs_rq.encoder.PatchEmbedding2d", "image_size": [16, 16], "patch_size": [8, 8], "channels": 3},
    {"_target_": "dabs_rq.encoder.TokenEmbedding", "seq_len": SEQ_LEN, "vocab_size": VOCAB},
]
COLOURS = ("red", "green", "blue")  # the bright channel of an image
SHAPES = ("square", "circle", "star")


def _pairs(folder, n_images=6):
    """``pics/<k>.png`` (colour k % 3) and two JSONL rows per image: a caption, then a question + answer.

    Rows of images 0 and 1 are the test split (column ``fold``); ``right`` says if the answer is right.
    Image k: channel ``k % 3`` bright, the others ``10 * (k + 1)`` (which image it is).
    """
    rows = []
    for k in range(n_images):
        colour = COLOURS[k % 3]
        pixels = np.full((20, 24, 3), 10 * (k + 1), dtype=np.uint8)
        pixels[..., k % 3] = 250
        (folder / "pics").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / "pics" / f"{k}.png")
        fold = "test" if k < 2 else "train"
        shape = "triangle" if k == 1 else SHAPES[k % 3]  # a word only test captions hold
        rows.append(
            {
                "image": f"pics/{k}.png",
                "caption": f"a {colour} {shape}",
                "question": "what colour is it",
                "answer": colour,
                "colour": colour,
                "right": 1,
                "fold": fold,
            }
        )
        wrong = COLOURS[(k + 1) % 3]
        rows.append(
            {
                "image": f"pics/{k}.png",
                "caption": f"one {colour} {shape} again",
                "question": "what colour is it",
                "answer": wrong,
                "colour": colour,
                "right": 0,
                "fold": fold,
            }
        )
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _yamls(folder, inputs=INPUTS, **changes):
    reader = {
        "_target_": "dabs_rq.data.generic.image_text.image_text_pairs",
        "table": "pairs.jsonl",
        "text_column": "caption",
        "image_size": [16, 16],
        "seq_len": SEQ_LEN,
        "vocab_size": VOCAB,
        "split_by": "column",
        "split_column": "fold",
    }
    write_domain(
        folder,
        "my_captions",
        display_name="My captions",
        domain="My vision/language",
        role="pretrain",
        inputs=INPUTS,
        reader={**reader, "label_type": "none"},
        batch_size=4,
        transfer=["my_answers"],
    )
    transfer = {**reader, "text_column": "question", "text_pair_column": "answer", "label_column": "right", **changes}
    return write_domain(
        folder,
        "my_answers",
        display_name="My answers",
        domain="My vision/language",
        role="transfer",
        inputs=inputs,
        reader={k: v for k, v in transfer.items() if v is not None},
        batch_size=4,
        task={"_target_": "dabs_rq.tasks.BinaryTask"},
    )


def _all(dataset):
    (x, ids), y = dataset[list(range(len(dataset)))]
    return x, ids, y


def _image_of(x):
    """Which image an item shows (its two dim channels encode it) and its colour."""
    bright = int(x.mean(dim=(1, 2)).argmax())
    dim = [c for c in range(3) if c != bright]
    return int(round(float(x[dim].mean()) * 255 / 10)) - 1, COLOURS[bright]


@pytest.mark.integration
def test_a_new_image_text_domain_runs_pretrain_transfer_table_from_yaml_alone(tmp_path, data_cache):
    mine = tmp_path / "mine"
    _pairs(mine)
    _yamls(mine)
    stored = public_run_adds_row(
        mine, tmp_path, data_cache, "my_captions", "my_answers", "My answers", "My vision/language"
    )
    assert stored["protocol"]["n_train"] == 8 and stored["protocol"]["n_test"] == 4  # the fold column


def test_items_pair_each_image_with_its_text_ids(tmp_path):
    mine = tmp_path / "mine"
    rows = _pairs(mine)
    cfg = domains.load("my_captions", extra=[mine]) if _yamls(mine) else None
    train = load_split("my_captions", "train", tmp_path, tmp_path / "cache", cfg=cfg)
    (image, ids), label = train[0]
    assert image.dtype == torch.float32 and image.shape == (3, 16, 16) and 0 <= float(image.min())
    assert ids.dtype == torch.int32 and ids.shape == (SEQ_LEN,)
    x, ids, y = _all(train)
    train_rows = [r for r in rows if r["fold"] == "train"]
    assert len(y) == len(train_rows) == 8 and set(y.tolist()) == {0}  # label_type: none
    # the word vocabulary comes from the train captions only: "red" (test image 0) is still known
    # from train image 3, but no test-only word is; ids are [CLS] words [SEP] [PAD]...
    vocab = WordVocabulary.build([r["caption"] for r in train_rows], VOCAB)
    assert ids.tolist() == vocab.encode([r["caption"] for r in train_rows], SEQ_LEN).tolist()
    for image, row in zip(x, train_rows):
        assert _image_of(image) == (int(row["image"][5:-4]), row["colour"])
    test_x, test_ids, _ = _all(load_split("my_captions", "test", tmp_path, tmp_path / "cache", cfg=cfg))
    assert len(test_ids) == 4 and [_image_of(im)[0] for im in test_x] == [0, 0, 1, 1]
    assert test_ids[0, 0] == CLS and UNK not in test_ids[0].tolist()  # "a red square": words seen in train
    assert UNK in test_ids[3].tolist()  # "one green triangle again": "triangle" only in test captions


def test_question_answer_pairs_and_labels(tmp_path):
    mine = tmp_path / "mine"
    rows = _pairs(mine)
    cfg = domains.load("my_answers", extra=[mine]) if _yamls(mine) else None
    x, ids, y = _all(load_split("my_answers", "test", tmp_path, tmp_path / "cache", cfg=cfg))
    test_rows = [r for r in rows if r["fold"] == "test"]
    assert y.tolist() == [r["right"] for r in test_rows] == [1, 0, 1, 0]  # classes "0", "1"
    seq = ids[0].tolist()
    # [CLS] what colour is it [SEP] red [SEP] [PAD]...
    assert seq[0] == CLS and seq[5] == SEP and seq[7] == SEP and set(seq[8:]) == {PAD}
    assert ids[0, 6] != ids[1, 6]  # the right answer and the wrong one differ
    assert torch.equal(x[0], x[1])  # both rows show image 0, decoded once


def test_a_tight_seq_len_trims_the_longer_text_and_multilabel_labels(tmp_path):
    mine = tmp_path / "mine"
    _pairs(mine)
    inputs = [INPUTS[0], {**INPUTS[1], "seq_len": 6}]
    cfg = (
        domains.load("my_answers", extra=[mine])
        if _yamls(mine, inputs, seq_len=6, label_type="multilabel", label_column="caption", label_separator=" ")
        else None
    )
    _, ids, y = _all(load_split("my_answers", "train", tmp_path, tmp_path / "c", cfg=cfg))
    assert ids.shape == (8, 6) and ids[0, 0] == CLS and ids[0, -1] == SEP
    # labels: the words of every caption, sorted: a again blue circle green one red square star triangle
    names = sorted({w for r in _pairs(tmp_path / "again") for w in r["caption"].split()})
    assert y.shape == (8, len(names)) and y.dtype == torch.float32
    assert y[0].tolist() == [float(n in "a blue star".split()) for n in names]  # image 2: a blue star


@pytest.mark.parametrize(
    "change, message",
    [
        ({"text_colum": "caption"}, "reader.text_colum: is not a key of image_text_pairs; valid keys: split_by"),
        ({"text_column": "questions"}, "reader.text_column: column 'questions' is not in"),
        ({"text_pair_column": "answers"}, "reader.text_pair_column: column 'answers' is not in"),
        ({"image_column": "picture"}, "reader.image_column: column 'picture' is not in"),
        ({"label_column": "correct"}, "reader.label_column: column 'correct' is not in"),
        ({"seq_len": "long"}, "reader.seq_len: must be of type int, got 'long'"),
        ({"seq_len": 2}, "reader.seq_len: must be at least 3"),
        ({"vocab_size": 3}, "reader.vocab_size: must exceed 4"),
        ({"table": "pairs.json"}, "reader.table: file or folder"),
        ({"image_size": [16, 0]}, "reader.image_size: must be [H, W], two positive integers"),
    ],
)
def test_schema_mistakes_name_the_file_the_key_and_what_is_expected(tmp_path, change, message):
    mine = tmp_path / "mine"
    _pairs(mine)
    path = _yamls(mine, **change)
    with pytest.raises(DomainConfigError) as err:
        domains.load("my_answers", extra=[mine])
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "inputs, message",
    [
        ([INPUTS[0], {**INPUTS[1], "seq_len": 16}], "inputs[1].seq_len: is 16 but the reader makes 12"),
        ([INPUTS[0], {**INPUTS[1], "vocab_size": 30}], "inputs[1].vocab_size: is 30 but the reader needs at least 40"),
        ([{**INPUTS[0], "image_size": [32, 32]}, INPUTS[1]], "inputs[0].image_size: is [32, 32] but the reader makes"),
    ],
)
def test_inputs_that_do_not_fit_the_pairs_are_named(tmp_path, inputs, message):
    mine = tmp_path / "mine"
    _pairs(mine)
    path = _yamls(mine, inputs=inputs)
    with pytest.raises(DomainConfigError) as err:
        domains.load("my_answers", extra=[mine])
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)


def test_a_corrupt_image_stops_the_run_or_its_rows_are_skipped(tmp_path, caplog):
    mine = tmp_path / "mine"
    rows = _pairs(mine)
    bad = mine / "pics" / "4.png"
    bad.write_bytes(bad.read_bytes()[:40])
    cfg = domains.load("my_answers", extra=[mine]) if _yamls(mine) else None
    with pytest.raises(CorruptDataError, match=r"pics/4\.png: cannot decode image"):
        load_split("my_answers", "train", tmp_path, tmp_path / "c1", cfg=cfg)
    with caplog.at_level(logging.WARNING):
        x, ids, y = _all(DomainDataModule(cfg, tmp_path / "c2", on_corrupt="skip").split("train"))
    assert len(y) == 6  # both rows of image 4 left out
    assert [_image_of(im)[0] for im in x] == [2, 2, 3, 3, 5, 5]
    assert y.tolist() == [r["right"] for r in rows if r["fold"] == "train" and r["image"] != "pics/4.png"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]
    assert len(lines) == 1 and "skipped 1 corrupt files in pairs train" in lines[0] and "4.png" in lines[0]
