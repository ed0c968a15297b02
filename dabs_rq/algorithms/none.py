"""``none``: no pretraining; transfer evaluates the randomly initialised encoder (DABS baseline)."""

from __future__ import annotations

from dabs_rq.algorithms.base import PretrainingAlgorithm


class NoPretraining(PretrainingAlgorithm):
    """The random-init baseline: the runner skips pretraining for it."""

    requires_pretraining = False
