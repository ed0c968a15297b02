"""Embedded-default readers: shapes, dtypes, label ranges and split sizes from the shipped data."""

from pathlib import Path

import pytest
import torch

from dabs_rq.data.embedded.digits import mnist5k, sklearn_digits
from dabs_rq.data.embedded.spoken_digits import spoken_digits
from dabs_rq.data.embedded.watch_imu import watch_exercises
from dabs_rq.data.embedded.wordnet import parse_data_file, resolve_wordnet_dir, wordnet_glosses
from dabs_rq.data.tensor_dataset import seeded_split
from dabs_rq.data.word_vocab import CLS, PAD, SEP, UNK, WordVocabulary


def test_mnist5k_split_sizes_shapes_and_labels(tmp_path):
    train, test = mnist5k("train", tmp_path), mnist5k("test", tmp_path)
    assert (len(train), len(test)) == (4000, 1000)
    (x,), y = train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert set(train.labels.tolist()) == set(range(10))
    assert (tmp_path / "mnist5k.pt").exists()  # cached for the next reader call


def test_sklearn_digits_are_upsampled_to_the_image_spec(tmp_path):
    train, test = sklearn_digits("train", tmp_path), sklearn_digits("test", tmp_path)
    assert len(train) + len(test) == 1797
    assert train.inputs[0].shape[1:] == (1, 28, 28)
    assert int(train.labels.max()) == 9


def test_watch_windows_are_split_by_subject(tmp_path):
    train, test = watch_exercises("train", tmp_path), watch_exercises("test", tmp_path)
    assert train.inputs[0].shape[1:] == (100, 6) and test.inputs[0].shape[1:] == (100, 6)
    assert len(train) > len(test) > 100
    assert set(train.labels.tolist()) == set(range(7))
    # standardised with the training subjects' statistics
    assert train.inputs[0].mean(dim=(0, 1)).abs().max() < 1e-3


def test_spoken_digits_tasks_use_disjoint_speakers(tmp_path):
    kw = dict(n_speakers=8, pretrain_speakers=4, digit_test_speakers=2, speaker_id_speakers=3, repetitions=2)
    pretrain = spoken_digits("train", tmp_path, task="pretrain", **kw)
    digit_train = spoken_digits("train", tmp_path, task="digit", **kw)
    digit_test = spoken_digits("test", tmp_path, task="digit", **kw)
    spk_train = spoken_digits("train", tmp_path, task="speaker", **kw)
    spk_test = spoken_digits("test", tmp_path, task="speaker", **kw)
    assert len(pretrain) == 4 * 2 * 10
    assert (len(digit_train), len(digit_test)) == (2 * 2 * 10, 2 * 2 * 10)
    assert (len(spk_train), len(spk_test)) == (3 * 10, 3 * 10)
    assert pretrain.inputs[0].shape[1:] == (1, 64, 64) and pretrain.inputs[0].dtype == torch.float32
    assert torch.isfinite(pretrain.inputs[0]).all()
    assert set(spk_train.labels.tolist()) == {0, 1, 2}
    assert set(digit_test.labels.tolist()) == set(range(10))
    # different speakers sound different: the clips are not all identical
    assert pretrain.inputs[0][0].ne(pretrain.inputs[0][10]).any()


def write_wordnet_fixture(root: Path) -> None:
    """A tiny WordNet database in the real data.* format (license header lines start with two spaces)."""
    header = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    lines = {
        "noun": [
            "00001740 03 n 01 entity 0 000 | that which is perceived or known to have its own existence  ",
            '02084071 05 n 01 dog 0 000 | a member of the genus Canis; "the dog barked all night"  ',
            "02121620 05 n 01 cat 0 000 | feline mammal usually having thick soft fur  ",
            "03082979 06 n 01 computer 0 000 | a machine for performing calculations automatically  ",
            "04379243 06 n 01 table 0 000 | a piece of furniture having a smooth flat top  ",
        ],
        "verb": [
            "01835496 38 v 01 travel 0 000 | change location; move, travel, or proceed  ",
            "00010435 29 v 01 hiccup 0 000 | breathe spasmodically  ",
        ],
        "adj": ["00001740 00 a 01 able 0 000 | having the necessary means or skill  "],
        "adv": ["00001740 02 r 01 quickly 0 000 | with speed  "],
    }
    root.mkdir(parents=True, exist_ok=True)
    for pos, rows in lines.items():
        (root / f"data.{pos}").write_text(header + "\n".join(rows) + "\n")


def test_wordnet_parser_and_tasks_on_a_fixture_in_the_real_format(tmp_path):
    root = tmp_path / "wordnet"
    write_wordnet_fixture(root)
    glosses, senses = parse_data_file(root / "data.noun")
    assert senses == ["noun.Tops", "noun.animal", "noun.animal", "noun.artifact", "noun.artifact"]
    assert glosses[1].startswith("a member of the genus Canis")
    nouns = wordnet_glosses(
        "train",
        tmp_path / "cache",
        task="noun_supersense",
        test_fraction=0.4,
        seq_len=8,
        vocab_size=40,
        wordnet_dir=str(root),
    )
    nouns_test = wordnet_glosses(
        "test",
        tmp_path / "cache",
        task="noun_supersense",
        test_fraction=0.4,
        seq_len=8,
        vocab_size=40,
        wordnet_dir=str(root),
    )
    assert (len(nouns), len(nouns_test)) == (3, 2)
    ids = nouns.inputs[0]
    assert ids.shape == (3, 8) and ids.dtype == torch.int32
    assert (ids[:, 0] == CLS).all() and int(ids.max()) < 40
    pretrain = wordnet_glosses(
        "train", tmp_path / "cache", task="pretrain", test_fraction=0.0, seq_len=8, vocab_size=40, wordnet_dir=str(root)
    )
    assert len(pretrain) == 9  # every part of speech


def test_missing_wordnet_gives_an_install_hint(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
        resolve_wordnet_dir(str(tmp_path / "none"))


@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").exists(), reason="Debian wordnet-base not installed")
def test_real_wordnet_noun_supersenses(tmp_path):
    ds = wordnet_glosses("test", tmp_path, task="noun_supersense", max_test=500)
    assert len(ds) == 500 and int(ds.labels.max()) == 25


def test_word_vocabulary_encoding():
    vocab = WordVocabulary.build(["the dog", "the cat", "the dog barks"], size=7)
    assert vocab.tokens[:4] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] and vocab.tokens[4] == "the"
    ids = vocab.encode(["The dog meows loudly"], seq_len=5)[0].tolist()
    assert ids == [CLS, vocab.index["the"], vocab.index["dog"], UNK, SEP]
    assert vocab.encode(["dog"], seq_len=5)[0].tolist()[-1] == PAD


def test_seeded_split_is_disjoint_complete_and_reproducible():
    a_train, a_test = seeded_split(100, 0.2, seed=3)
    b_train, b_test = seeded_split(100, 0.2, seed=3)
    assert (a_train == b_train).all() and len(a_test) == 20
    assert sorted([*a_train, *a_test]) == list(range(100))


def test_spoken_digits_are_the_same_audio_in_every_build(tmp_path):
    """libespeak-ng draws random numbers and keeps state between utterances: two builds of the same
    settings (the second after other synthesis in this process) must still give identical tensors."""
    from dabs_rq.data.embedded.espeak import synthesize_all

    kw = dict(n_speakers=6, pretrain_speakers=3, digit_test_speakers=1, speaker_id_speakers=2, repetitions=2)
    first = spoken_digits("train", tmp_path / "a", task="pretrain", **kw)
    synthesize_all([("hello there", "en-us+m3", 40, 150)], seed=7)
    second = spoken_digits("train", tmp_path / "b", task="pretrain", **kw)
    assert torch.equal(first.inputs[0], second.inputs[0]) and torch.equal(first.labels, second.labels)
