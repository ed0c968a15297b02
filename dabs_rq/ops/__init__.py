"""Tensor operators of the method: :mod:`dabs_rq.ops.randomized_quantization` (RQ).

The functional form is ``dabs_rq.ops.randomized_quantization.randomized_quantization``; it is
not re-exported here, where the name would shadow its module.
"""

from dabs_rq.ops.randomized_quantization import RandomizedQuantization

__all__ = ["RandomizedQuantization"]
