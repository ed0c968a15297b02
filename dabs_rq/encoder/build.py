"""Builds the encoder from a model config and a domain's input list (both Hydra configs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn


def build_encoder(model_cfg: Any, inputs_cfg: Sequence[Any]) -> nn.Module:
    """Instantiate one embedder per domain input (at the model's width), then the transformer."""
    from hydra.utils import instantiate  # here, so the encoder imports without Hydra (GPU benchmarks)

    embedders = [instantiate(spec, dim=model_cfg.dim) for spec in inputs_cfg]
    return instantiate(model_cfg, embedders=embedders, _convert_="partial")
