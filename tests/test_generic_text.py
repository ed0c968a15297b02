"""Generic text reader: brand-new text datasets (CSV, JSONL, parquet) from YAML alone."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from dabs_rq.data import domains
from dabs_rq.data.datamodule import DomainDataModule
from dabs_rq.data.domains import DomainConfigError
from dabs_rq.data.storage import CorruptDataError
from dabs_rq.data.tensor_dataset import seeded_split
from dabs_rq.data.word_vocab import CLS, PAD, SEP, UNK
from tests.conftest import load_split
from tests.generic_helpers import record, run_public_command, table_rows, write_domain

TARGET = "dabs_rq.data.generic.text.text_table"
SEQ, VOCAB = 12, 64
INPUTS = [{"_target_": "dabs_rq.encoder.TokenEmbedding", "seq_len": SEQ, "vocab_size": VOCAB}]
GOOD, BAD, FILL = ["good", "great", "fine", "nice"], ["bad", "awful", "poor", "dull"], ["the", "film", "was", "very"]


def _sentence(rng, words) -> str:
    return " ".join([*rng.choice(FILL, 3), *rng.choice(words, 2)])


def _reviews(folder, n=40):
    """reviews.csv (text, label pos/neg), corpus.jsonl (text only) and pairs.parquet (a, b, score, part)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = ["pos" if i % 2 else "neg" for i in range(n)]
    pd.DataFrame({"text": [_sentence(rng, GOOD if y == "pos" else BAD) for y in labels], "label": labels}).to_csv(
        folder / "reviews.csv", index=False
    )
    with open(folder / "corpus.jsonl", "w") as handle:
        for _i in range(60):
            handle.write(json.dumps({"text": _sentence(rng, GOOD + BAD)}) + "\n")
    scores = rng.uniform(0, 5, size=n).round(2)
    pd.DataFrame(
        {
            "a": [_sentence(rng, GOOD) for _ in range(n)],
            "b": [_sentence(rng, BAD) for _ in range(n)],
            "score": scores,
            "part": ["test" if i % 5 == 0 else "train" for i in range(n)],
        }
    ).to_parquet(folder / "pairs.parquet")


def _reader(**fields) -> dict:
    return {"_target_": TARGET, "seq_len": SEQ, "vocab_size": VOCAB, **fields}


def _transfer(folder, name, reader, task=None):
    task = task or {"_target_": "dabs_rq.tasks.MulticlassTask", "num_classes": 2}
    return write_domain(
        folder,
        name,
        display_name=name.replace("_", " "),
        domain="My text",
        role="transfer",
        inputs=INPUTS,
        reader=_reader(**reader),
        batch_size=8,
        task=task,
    )


def _split(name, folder, tmp_path, split, cache="cache"):
    data = load_split(name, split, tmp_path, tmp_path / cache, cfg=domains.load(name, extra=[folder]))
    (ids,), y = data[list(range(len(data)))]
    return ids, y


# --------------------------------------------------------------------------- the public command


@pytest.mark.integration
def test_a_new_text_domain_runs_pretrain_transfer_table_from_yaml_alone(tmp_path, data_cache):
    mine = tmp_path / "mine"
    _reviews(mine)
    shared = {"vocab_from": "corpus.jsonl", "vocab_columns": ["text"]}
    write_domain(
        mine,
        "my_text",
        display_name="My corpus",
        domain="My text",
        role="pretrain",
        inputs=INPUTS,
        reader=_reader(path="corpus.jsonl", label_type="none", **shared),
        batch_size=8,
        transfer=["my_reviews", "my_pairs"],
    )
    _transfer(mine, "my_reviews", {"path": "reviews.csv", "label_column": "label", "test_fraction": 0.25, **shared})
    _transfer(
        mine,
        "my_pairs",
        {
            "path": "pairs.parquet",
            "text_column": "a",
            "text_pair_column": "b",
            "label_type": "score",
            "label_column": "score",
            "split_by": "column",
            "split_column": "part",
            **shared,
        },
        task={"_target_": "dabs_rq.tasks.RegressionTask", "metric": "spearman"},
    )
    done = run_public_command("my_text", mine, tmp_path, data_cache)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = table_rows(tmp_path)
    assert rows["my_reviews"]["display_name"] == "my reviews" and rows["my_reviews"]["domain"] == "My text"
    assert rows["my_pairs"]["n"] == 1 and np.isfinite(rows["my_pairs"]["mean"])
    reviews, pairs = record(tmp_path, "my_reviews"), record(tmp_path, "my_pairs")
    assert (reviews["protocol"]["n_train"], reviews["protocol"]["n_test"]) == (30, 10)
    assert (pairs["protocol"]["n_train"], pairs["protocol"]["n_test"]) == (32, 8)


# --------------------------------------------------------------------------- ids, labels, splits


def test_words_vocabulary_comes_from_the_train_rows_only(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "train.csv").write_text("sentence,label\nalpha beta,x\nalpha gamma,y\n")
    (mine / "test.csv").write_text("sentence,label\nalpha delta,y\n")
    _transfer(
        mine,
        "words",
        {
            "split_by": "files",
            "train": "train.csv",
            "test": "test.csv",
            "text_column": "sentence",
            "label_column": "label",
        },
    )
    ids, y = _split("words", mine, tmp_path, "train")
    # vocabulary: specials, then train words by count: alpha (2), beta, gamma
    alpha, beta, gamma = 4, 5, 6
    assert ids.dtype == torch.int32 and ids.shape == (2, SEQ)
    assert ids[0, :4].tolist() == [CLS, alpha, beta, SEP] and ids[0, 4:].eq(PAD).all()
    assert ids[1, :4].tolist() == [CLS, alpha, gamma, SEP] and y.tolist() == [0, 1]
    test_ids, test_y = _split("words", mine, tmp_path, "test")
    assert test_ids[0, :4].tolist() == [CLS, alpha, UNK, SEP] and test_y.tolist() == [1]  # delta: test only


def test_csv_classes_ratio_split_and_truncation(tmp_path):
    mine = tmp_path / "mine"
    _reviews(mine)
    _transfer(
        mine,
        "rev",
        {
            "path": "reviews.csv",
            "label_column": "label",
            "classes": ["pos", "neg"],
            "test_fraction": 0.25,
            "split_seed": 3,
        },
    )
    cfg = domains.load("rev", extra=[mine])
    assert cfg.reader.path == str((mine / "reviews.csv").resolve())  # relative to the YAML's folder
    table = pd.read_csv(mine / "reviews.csv")
    train_rows, test_rows = seeded_split(len(table), 0.25, 3)
    ids, y = _split("rev", mine, tmp_path, "train")
    assert y.tolist() == [0 if v == "pos" else 1 for v in table["label"].iloc[train_rows]]  # classes' order
    assert ids.shape == (30, SEQ) and (ids[:, 0] == CLS).all() and (ids[:, 6] == SEP).all()  # 5 words each
    assert (ids[:, 1:6] > SEP).all()  # every train word is in the vocabulary
    test_ids, test_y = _split("rev", mine, tmp_path, "test")
    assert test_y.tolist() == [0 if v == "pos" else 1 for v in table["label"].iloc[test_rows]]
    # a long text is cut to seq_len, still ending in [SEP]
    (mine / "long.csv").write_text("text,label\n" + "word " * 50 + ",a\nword,b\n")
    _transfer(mine, "long", {"path": "long.csv", "label_column": "label", "test_fraction": 0.5})
    long_ids = torch.cat([_split("long", mine, tmp_path, s)[0] for s in ("train", "test")])
    assert sorted(long_ids[:, SEQ - 1].tolist()) == [PAD, SEP]


def test_jsonl_integer_classes_are_ordered_as_numbers_and_split_by_column(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    rows = [
        {"text": f"row {i}", "y": y, "split": "dev" if i % 4 == 0 else "fit"}
        for i, y in enumerate([10, 2, 1, 2, 10, 1, 2, 1])
    ]
    (mine / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _transfer(
        mine,
        "ints",
        {
            "path": "data.jsonl",
            "label_column": "y",
            "split_by": "column",
            "split_column": "split",
            "train_value": "fit",
            "test_value": "dev",
        },
        task={"_target_": "dabs_rq.tasks.MulticlassTask", "num_classes": 3},
    )
    _, y = _split("ints", mine, tmp_path, "train")
    assert y.tolist() == [1, 0, 1, 0, 1, 0]  # labels 2, 1, 2, 1, 2, 1 of classes 1, 2, 10 (not "1" < "10" < "2")
    _, test_y = _split("ints", mine, tmp_path, "test")
    assert test_y.tolist() == [2, 2]


def test_parquet_sentence_pairs_with_a_score(tmp_path):
    mine = tmp_path / "mine"
    _reviews(mine)
    _transfer(
        mine,
        "pairs",
        {
            "path": "pairs.parquet",
            "text_column": "a",
            "text_pair_column": "b",
            "label_type": "score",
            "label_column": "score",
            "split_by": "column",
            "split_column": "part",
        },
        task={"_target_": "dabs_rq.tasks.RegressionTask"},
    )
    table = pd.read_parquet(mine / "pairs.parquet")
    ids, y = _split("pairs", mine, tmp_path, "train")
    expected = table["score"][table["part"] == "train"].to_numpy()
    assert y.dtype == torch.float32 and np.allclose(y.numpy(), expected)
    # 5 + 5 words do not fit in 12 tokens: [CLS] 4 words [SEP] 5 words [SEP] (the longer one, or the first, is cut)
    assert ids.shape == (32, SEQ) and (ids[:, 0] == CLS).all() and (ids[:, 5] == SEP).all()
    assert (ids[:, 1:5] > SEP).all() and (ids[:, 6:11] > SEP).all() and (ids[:, 11] == SEP).all()


def test_multilabel_from_0_1_columns_and_from_names(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    rows = [
        ("cats and dogs", 1, 1, "cat|dog", ["cat", "dog"]),
        ("a cat", 1, 0, "cat", ["cat"]),
        ("no pets", 0, 0, "", []),
        ("a dog", 0, 1, "dog", ["dog"]),
        ("dog dog", 0, 1, " dog ", ["dog"]),
    ]
    (mine / "pets.jsonl").write_text(
        "".join(json.dumps({"text": t, "cat": c, "dog": d, "names": n, "listed": ls}) + "\n" for t, c, d, n, ls in rows)
    )
    common = {"label_type": "multilabel", "split_by": "files", "train": "pets.jsonl", "test": "pets.jsonl"}
    task = {"_target_": "dabs_rq.tasks.MultilabelTask", "num_labels": 2}
    expected = [[1, 1], [1, 0], [0, 0], [0, 1], [0, 1]]
    _transfer(mine, "by_columns", {**common, "label_columns": ["cat", "dog"]}, task=task)
    assert _split("by_columns", mine, tmp_path, "train")[1].tolist() == expected
    _transfer(mine, "by_names", {**common, "label_column": "names"}, task=task)
    assert _split("by_names", mine, tmp_path, "train")[1].tolist() == expected
    _transfer(mine, "by_list", {**common, "label_column": "listed", "classes": ["dog", "cat"]}, task=task)
    assert _split("by_list", mine, tmp_path, "train")[1].tolist() == [r[::-1] for r in expected]


def test_a_pretrained_tokenizer_folder_beside_the_yaml(tmp_path):
    from tests.tokenizer_fixtures import write_bert_tokenizer

    mine = tmp_path / "mine"
    mine.mkdir()
    write_bert_tokenizer(mine, "tok")  # mine/tokenizers/tok: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4 the=5 ...
    (mine / "qa.csv").write_text("q,a,label\nthe dog,the cat,yes\nwhat color,red,no\nthe mat,zebra,yes\n")
    _transfer(
        mine,
        "qa",
        {
            "path": "qa.csv",
            "text_column": "q",
            "text_pair_column": "a",
            "label_column": "label",
            "tokenizer": "tokenizers/tok",
            "split_by": "files",
            "train": "qa.csv",
            "test": "qa.csv",
        },
    )
    cfg = domains.load("qa", extra=[mine])
    assert cfg.reader.tokenizer == str((mine / "tokenizers" / "tok").resolve())
    ids, y = _split("qa", mine, tmp_path, "train")
    the, dog, cat, mat = 5, 7, 8, 11
    assert ids[0, :7].tolist() == [2, the, dog, 3, the, cat, 3] and ids[0, 7:].eq(0).all()
    assert ids[2, :6].tolist() == [2, the, mat, 3, 1, 3]  # zebra: [UNK]
    assert y.tolist() == [1, 0, 1]


def test_vocab_from_gives_pretraining_and_transfer_one_id_per_word(tmp_path):
    mine = tmp_path / "mine"
    _reviews(mine)
    (mine / "other.csv").write_text("text,label\ngood awful,a\nfilm was,b\n" * 3)
    _transfer(mine, "pre", {"path": "corpus.jsonl", "label_type": "none", "vocab_from": "corpus.jsonl"})
    _transfer(mine, "post", {"path": "other.csv", "label_column": "label", "vocab_from": "corpus.jsonl"})
    pre, _ = _split("pre", mine, tmp_path, "train")
    post, _ = _split("post", mine, tmp_path, "train")
    corpus = [json.loads(line)["text"].split() for line in (mine / "corpus.jsonl").read_text().splitlines()]
    pre_rows, _ = seeded_split(len(corpus), 0.2, 0)
    id_of = {w: int(i) for row, r in zip(pre_rows, pre) for w, i in zip(corpus[row], r[1:].tolist())}
    words = [("good", "awful"), ("film", "was")]
    assert all(post[k % 2, 1:3].tolist() == [id_of[a], id_of[b]] for k, (a, b) in enumerate(words))
    # without vocab_from, the two files' vocabularies differ
    _transfer(mine, "alone", {"path": "other.csv", "label_column": "label"})
    alone, _ = _split("alone", mine, tmp_path, "train")
    assert alone[:, 1:3].tolist() != post[:, 1:3].tolist()


# --------------------------------------------------------------------------- schema mistakes


@pytest.mark.parametrize(
    "change, message",
    [
        ({"text_colum": "text"}, "reader.text_colum: is not a key of text_table; valid keys: split_by"),
        ({"seq_len": "long"}, "reader.seq_len: must be of type int, got 'long'"),
        ({"path": "nope.csv"}, "reader.path: file or folder"),
        ({"text_column": "body"}, "reader.text_column: column 'body' is not in"),
        ({"label_column": "stars"}, "reader.label_column: column 'stars' is not in"),
        ({"text_pair_column": "second"}, "reader.text_pair_column: column 'second' is not in"),
        ({"label_type": "regression"}, "reader.label_type: must be one of none, class, multilabel, score"),
        ({"split_by": "files"}, "reader.train: is needed with split_by: files"),
        ({"tokenizer": "./no_such_folder"}, "reader.tokenizer: file or folder"),
        ({"seq_len": 2}, "reader.seq_len: must be at least 3"),
        ({"vocab_size": 3}, "reader.vocab_size: must be more than 4"),
        ({"vocab_columns": ["text"]}, "reader.vocab_columns: only applies with vocab_from"),
        ({"vocab_from": "corpus.jsonl", "vocab_columns": ["body"]}, "reader.vocab_columns: column 'body' is not in"),
        ({"classes": ["pos", "pos"]}, "reader.classes: names a class twice"),
    ],
)
def test_schema_mistakes_name_the_file_the_key_and_what_is_expected(tmp_path, change, message):
    mine = tmp_path / "mine"
    _reviews(mine)
    path = _transfer(mine, "rev", {"path": "reviews.csv", "label_column": "label", **change})
    with pytest.raises(DomainConfigError) as err:
        domains.load("rev", extra=[mine])
    text = str(err.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


def test_the_embedding_seq_len_must_equal_the_readers(tmp_path):
    import dabs_rq.data.generic as generic

    if not hasattr(generic, "check_inputs"):
        pytest.skip("this checkout's domain loader does not compare inputs with the reader")
    mine = tmp_path / "mine"
    _reviews(mine)
    path = _transfer(mine, "rev", {"path": "reviews.csv", "label_column": "label", "seq_len": SEQ + 4})
    with pytest.raises(DomainConfigError) as err:
        domains.load("rev", extra=[mine])
    assert str(err.value).startswith(f"{path}: inputs[0].seq_len: is {SEQ} but the reader makes {SEQ + 4}")


# --------------------------------------------------------------------------- corrupt rows


def test_malformed_rows_stop_the_run_naming_file_and_row_or_are_skipped_and_counted(tmp_path, caplog):
    mine = tmp_path / "mine"
    mine.mkdir()
    rows = [f"the film {i},{i / 10}" for i in range(20)]
    rows[3] = ",1.5"  # empty text
    rows[7] = "the film seven,abc"  # a score that is no number
    rows[12] = "the film twelve,"  # a missing score
    (mine / "scores.csv").write_text("text,score\n" + "\n".join(rows) + "\n")
    _transfer(
        mine,
        "scores",
        {"path": "scores.csv", "label_type": "score", "label_column": "score"},
        task={"_target_": "dabs_rq.tasks.RegressionTask"},
    )
    cfg = domains.load("scores", extra=[mine])
    with pytest.raises(CorruptDataError) as err:
        load_split("scores", "train", tmp_path, tmp_path / "c1", cfg=cfg)
    assert str(err.value) == f"corrupt data: {mine / 'scores.csv'} row 4: empty or missing text in column 'text'"
    caplog.set_level(logging.WARNING)
    skipping = DomainDataModule(cfg, tmp_path / "c2", on_corrupt="skip")
    train, test = skipping.split("train"), skipping.split("test")
    summaries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]
    assert len(summaries) == 1 and summaries[0].startswith("skipped 3 corrupt rows in scores.csv"), summaries
    assert "row 4: empty or missing text" in summaries[0]
    # rows are split before the bad ones are dropped: every good row stays in its split
    train_rows, test_rows = seeded_split(20, 0.2, 0)
    good = [r for r in range(20) if r not in (3, 7, 12)]
    assert np.allclose(train.labels.numpy(), [r / 10 for r in train_rows if r in good])
    assert np.allclose(test.labels.numpy(), [r / 10 for r in test_rows if r in good])


@pytest.mark.parametrize(
    "line, reason",
    [
        ('{"text": "a cat", "label": "cow"}', "row 3: label 'cow' is not one of reader.classes: cat, dog"),
        ('{"text": "a cat"}', "row 3: missing label in column 'label'"),
        ('{"text": ["a", "list"], "label": "cat"}', "row 3: empty or missing text in column 'text'"),
        ('{"text": "   ", "label": "cat"}', "row 3: empty or missing text in column 'text'"),
    ],
)
def test_jsonl_rows_with_bad_classes_or_texts_are_corrupt(tmp_path, line, reason):
    mine = tmp_path / "mine"
    mine.mkdir()
    lines = [
        '{"text": "a dog", "label": "dog"}',
        '{"text": "the cat", "label": "cat"}',
        line,
        '{"text": "dog", "label": "dog"}',
    ]
    (mine / "pets.jsonl").write_text("\n".join(lines) + "\n")
    _transfer(
        mine,
        "pets",
        {
            "path": "pets.jsonl",
            "label_column": "label",
            "classes": ["cat", "dog"],
            "split_by": "files",
            "train": "pets.jsonl",
            "test": "pets.jsonl",
        },
    )
    cfg = domains.load("pets", extra=[mine])
    with pytest.raises(CorruptDataError, match=f"pets.jsonl {reason}"):
        load_split("pets", "train", tmp_path, tmp_path / "c1", cfg=cfg)
    skipped = DomainDataModule(cfg, tmp_path / "c2", on_corrupt="skip").split("train")
    assert skipped.labels.tolist() == [1, 0, 1]
