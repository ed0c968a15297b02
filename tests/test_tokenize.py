"""Tokenizer loading from the data root and DABS-style fixed-length encoding (offline)."""

import pytest

from dabs_rq.data.readers.tokenize import encode, load_tokenizer
from tests.tokenizer_fixtures import write_bert_tokenizer


def test_local_tokenizer_is_found_under_the_data_root_and_encodes_pairs(tmp_path):
    write_bert_tokenizer(tmp_path)
    tok = load_tokenizer("bert-base-uncased", tmp_path)
    ids = encode(tok, ["the dog", "a cat is on the mat"], ["what color", "red"], max_length=8)
    assert ids.shape == (2, 8) and str(ids.dtype) == "torch.int32"
    vocab = tok.get_vocab()
    assert ids[0].tolist() == [
        vocab["[CLS]"],
        vocab["the"],
        vocab["dog"],
        vocab["[SEP]"],
        vocab["what"],
        vocab["color"],
        vocab["[SEP]"],
        vocab["[PAD]"],
    ]
    assert ids[1, -1].item() == vocab["[SEP]"]  # truncated pair still ends with [SEP]
    single = encode(tok, ["dogs"], max_length=5)[0].tolist()
    assert single == [vocab["[CLS]"], vocab["dog"], vocab["##s"], vocab["[SEP]"], vocab["[PAD]"]]


def test_missing_tokenizer_offline_gives_a_clear_message(tmp_path, monkeypatch):
    import transformers

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to the hub")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    with pytest.raises(FileNotFoundError, match="tokenizer 'no-such-tokenizer-xyz' could not be loaded.*save it to"):
        load_tokenizer("no-such-tokenizer-xyz", tmp_path)
