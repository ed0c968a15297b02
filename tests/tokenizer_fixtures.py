"""Tiny tokenizers built in the test (no hub download), saved where dabs_rq looks for them."""

from __future__ import annotations

from pathlib import Path

WORDS = ["the", "a", "dog", "cat", "is", "on", "mat", "what", "color", "red", "blue", "yes", "no", "##s", "."]


def write_bert_tokenizer(data_root: Path, name: str = "bert-base-uncased") -> Path:
    """A WordPiece tokenizer with a 20-token vocabulary at ``<data_root>/tokenizers/<name>``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    core = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    folder = Path(data_root) / "tokenizers" / name
    tokenizer.save_pretrained(folder)
    return folder
