"""Former home of the RQ operator, kept so that ``dabs_rq.augment.RandomizedQuantization`` (the
``_target_`` of ``conf/algorithm/rq*.yaml``) and ``randomized_quantization`` keep importing.
The operator lives in :mod:`dabs_rq.ops.randomized_quantization`."""

from dabs_rq.ops.randomized_quantization import (
    COLLAPSE_MODES,
    SPACINGS,
    STATISTICS,
    RandomizedQuantization,
    randomized_quantization,
)

__all__ = ["COLLAPSE_MODES", "SPACINGS", "STATISTICS", "RandomizedQuantization", "randomized_quantization"]
