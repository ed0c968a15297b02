"""Which token positions the ShED and MAE objectives corrupt: ``ceil(L * rate)`` per sample."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dabs_rq.errors import UserError


def check_corruption_rate(rate: float) -> float:
    if not 0.0 < rate <= 1.0:
        raise UserError(f"corruption_rate must be in (0, 1], got {rate}")
    return rate


def corrupted_positions(batch: int, length: int, rate: float, device: torch.device) -> Tensor:
    """[batch, k] distinct random positions per sample, k = ceil(length * rate) (DABS: ``rand().topk``)."""
    check_corruption_rate(rate)
    k = max(1, math.ceil(length * rate))
    return torch.rand(batch, length, device=device).topk(k, dim=1).indices
