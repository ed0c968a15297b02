"""The RQ test oracle: the reference module of microsoft/random_quantize (Wu et al., MIT license).

:func:`reference_quantize` quantizes a (B, C, H, W) batch as ``RandomizedQuantizationAugModule``
does, with the same random draws. When the upstream file is vendored verbatim in this folder as
``randomized_quantization.py`` (with its MIT license text), it runs that file through the tiny
adapter below; otherwise it runs :mod:`tests.reference.restated`, an independent restatement.
``tests/test_augment.py`` checks the two equal, bit for bit, whenever the upstream file is here.
"""

from __future__ import annotations

import importlib
import importlib.util

import torch

from tests.reference import restated

#: the upstream module, or None when it is not vendored here
UPSTREAM = (
    importlib.import_module("tests.reference.randomized_quantization")
    if importlib.util.find_spec("tests.reference.randomized_quantization")
    else None
)


def upstream_quantize(x: torch.Tensor, num_bins: int, spacing: str, collapse: str, p: float = 1.0) -> torch.Tensor:
    """The upstream module on a (B, C, H, W) batch (``transforms_like=False``, its batched use)."""
    module = UPSTREAM.RandomizedQuantizationAugModule(
        num_bins, collapse_to_val=collapse, spacing=spacing, p_random_apply_rand_quant=p
    )
    return module(x.contiguous())


def reference_quantize(x: torch.Tensor, num_bins: int, spacing: str, collapse: str, p: float = 1.0) -> torch.Tensor:
    """The reference's output for ``x`` (B, C, H, W) with the current random state."""
    quantize = upstream_quantize if UPSTREAM is not None else restated.reference_quantize
    return quantize(x, num_bins, spacing, collapse, p)
