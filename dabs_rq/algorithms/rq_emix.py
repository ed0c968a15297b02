"""``rq_emix`` (ours): e-Mix whose mixed view is built from RQ views of the embeddings.

``q = RQ(e)`` (with ``rq``'s ``gradient`` option, :func:`dabs_rq.algorithms.rq.rq_view`;
straight-through by default), ``m = lambda * q + (1 - lambda) * q[perm].detach()``, contrasted
with the clean embeddings exactly as e-Mix does (same lambda, targets and temperature). It
asks whether RQ's information removal adds to mixing's.
"""

from __future__ import annotations

from torch import Tensor, nn

from dabs_rq.algorithms.base import OptimizerFactory
from dabs_rq.algorithms.emix import EMix
from dabs_rq.algorithms.rq import check_gradient, rq_view
from dabs_rq.ops import RandomizedQuantization


class RQEMix(EMix):
    def __init__(
        self,
        encoder: nn.Module,
        optimizer: OptimizerFactory | None = None,
        quantizer: RandomizedQuantization | None = None,
        temperature: float = 0.2,
        alpha: float = 1.0,
        gradient: str = "straight_through",
        gather_negatives: bool = True,
    ) -> None:
        super().__init__(encoder, optimizer, temperature, alpha, gather_negatives)
        self.quantizer = quantizer if quantizer is not None else RandomizedQuantization(channel_dim=-1)
        self.gradient = check_gradient(gradient)

    def mix(self, embeddings: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return super().mix(rq_view(self.quantizer, embeddings, self.gradient))

    def settings(self) -> dict:
        q = self.quantizer
        return {
            **super().settings(),
            "gradient": self.gradient,
            "num_bins": q.num_bins,
            "collapse": q.collapse,
            "spacing": q.spacing,
            "p": q.p,
            "channel_dim": q.channel_dim,
            "statistics": q.statistics,
        }
