"""The splits every reader serves, and the one check of a requested split name.

DABS has two splits: ``train`` (pretraining and transfer training) and ``test`` (the split whose
metric is reported; for datasets with hidden test labels, their validation set). Every reader
calls :func:`check_split` before reading anything, so a wrong name fails at once with the same
message, naming the splits there are.
"""

from __future__ import annotations

SPLITS = ("train", "test")


def check_split(split: str) -> str:
    """``split`` if it is one of :data:`SPLITS`, else a ``ValueError`` that names them."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    return split
