"""Pretrained tokenizers (bert-base-uncased, xlm-roberta-base), loaded lazily and offline-friendly.

A tokenizer is looked up first in ``<data_root>/tokenizers/<name>/`` (a folder written by
``tokenizer.save_pretrained``), so clusters without internet can pre-place it; otherwise it
is fetched from the Hugging Face hub by name (cached by ``transformers``). DABS feeds only
``input_ids``, padded/truncated to a fixed length, sentence pairs encoded as a pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch


@lru_cache(maxsize=8)
def _load(source: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source)


def load_tokenizer(name: str, data_root: str | Path | None = None) -> Any:
    """The tokenizer ``name`` from ``<data_root>/tokenizers/<name>`` if present, else from the hub."""
    if data_root is not None:
        local = Path(data_root) / "tokenizers" / name
        if local.is_dir():
            return _load(str(local))
    try:
        return _load(name)
    except OSError as err:
        place = f" or save it to {Path(data_root) / 'tokenizers' / name}" if data_root is not None else ""
        raise FileNotFoundError(
            f"tokenizer '{name}' could not be loaded (no internet?): run once with internet access{place} "
            "(AutoTokenizer.from_pretrained(name).save_pretrained(folder))"
        ) from err


def encode(
    tokenizer: Any, first: Sequence[str], second: Sequence[str] | None = None, max_length: int = 128, batch: int = 4096
) -> torch.Tensor:
    """[N, max_length] int32 ``input_ids`` (pairs as ``[CLS] a [SEP] b [SEP]``), padded and truncated."""
    out = []
    for start in range(0, len(first), batch):
        a = list(first[start : start + batch])
        b = list(second[start : start + batch]) if second is not None else None
        ids = tokenizer(a, b, max_length=max_length, padding="max_length", truncation=True)["input_ids"]
        out.append(torch.tensor(ids, dtype=torch.int32))
    return torch.cat(out) if out else torch.zeros(0, max_length, dtype=torch.int32)
