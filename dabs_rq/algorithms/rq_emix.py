"""``rq_emix`` (ours): e-Mix whose mixed view is built from RQ views of the embeddings.

``q = RQ(e)`` (straight-through, as in ``rq``), ``m = lambda * q + (1 - lambda) * q[perm].detach()``,
contrasted with the clean embeddings exactly as e-Mix does (same lambda, targets and
temperature). It asks whether RQ's information removal adds to mixing's.
"""

from __future__ import annotations

from torch import Tensor, nn

from dabs_rq.algorithms.base import OptimizerFactory
from dabs_rq.algorithms.emix import EMix
from dabs_rq.augment import RandomizedQuantization


class RQEMix(EMix):
    def __init__(self, encoder: nn.Module, optimizer: OptimizerFactory | None = None,
                 quantizer: RandomizedQuantization | None = None, temperature: float = 0.2, alpha: float = 1.0,
                 straight_through: bool = True, gather_negatives: bool = True) -> None:
        super().__init__(encoder, optimizer, temperature, alpha, gather_negatives)
        self.quantizer = quantizer if quantizer is not None else RandomizedQuantization(channel_dim=-1)
        self.straight_through = straight_through

    def mix(self, embeddings: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        quantized = self.quantizer(embeddings.detach())
        view = embeddings + (quantized - embeddings.detach()) if self.straight_through else quantized
        return super().mix(view)

    def settings(self) -> dict:
        q = self.quantizer
        return {**super().settings(), "straight_through": self.straight_through, "num_bins": q.num_bins,
                "collapse": q.collapse, "spacing": q.spacing, "p": q.p, "channel_dim": q.channel_dim,
                "statistics": q.statistics}
