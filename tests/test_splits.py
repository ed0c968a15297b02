"""Every reader refuses a split other than train and test in the same words, before reading anything."""

from __future__ import annotations

import pytest

from dabs_rq.data.embedded.digits import mnist5k, sklearn_digits
from dabs_rq.data.embedded.spoken_digits import spoken_digits
from dabs_rq.data.embedded.watch_imu import watch_exercises
from dabs_rq.data.embedded.wordnet import wordnet_glosses
from dabs_rq.data.readers import pamap2, text, vqa, xray
from dabs_rq.data.readers.images import cifar10
from dabs_rq.data.splits import SPLITS, check_split

MESSAGE = "split must be one of train, test; got 'val'"


def test_check_split_names_the_splits_there_are():
    assert SPLITS == ("train", "test") and [check_split(s) for s in SPLITS] == list(SPLITS)
    with pytest.raises(ValueError, match=MESSAGE):
        check_split("val")


@pytest.mark.parametrize(
    "read",
    [
        lambda tmp: mnist5k("val", tmp),
        lambda tmp: sklearn_digits("val", tmp),
        lambda tmp: spoken_digits("val", tmp),
        lambda tmp: watch_exercises("val", tmp),
        lambda tmp: wordnet_glosses("val", tmp),
        lambda tmp: pamap2.pamap2("val", tmp, tmp),
        lambda tmp: text.glue("val", tmp, tmp),
        lambda tmp: vqa.vqa("val", tmp, tmp),
        lambda tmp: xray.chexpert("val", tmp, tmp),
        lambda tmp: cifar10("val", tmp, tmp),
    ],
)
def test_readers_refuse_an_unknown_split_before_reading(read, tmp_path):
    with pytest.raises(ValueError, match=MESSAGE):
        read(tmp_path)
    assert not any(tmp_path.iterdir())  # nothing read, built or downloaded
