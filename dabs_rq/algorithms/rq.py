"""``rq``: Randomized Quantization of token embeddings as the view generator, InfoNCE objective."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from dabs_rq.algorithms.base import OptimizerFactory, PretrainingAlgorithm
from dabs_rq.augment import RandomizedQuantization

VIEWS = ("clean_vs_rq", "rq_vs_rq")


class RQContrastive(PretrainingAlgorithm):
    """Contrast the encoding of an RQ view of the embeddings with a clean (or second RQ) view.

    RQ acts channel-wise on [batch, tokens, dim] embeddings: channels = embedding
    dimensions, statistics over one sample's tokens. Quantization has zero gradient
    almost everywhere; with ``straight_through`` (ours, default) the RQ view passes its
    gradient to the embedding module as if it were the identity, so the embedder also
    learns from the RQ branch (essential for ``rq_vs_rq``, where no clean branch exists).
    """

    def __init__(
        self,
        encoder: nn.Module,
        optimizer: OptimizerFactory | None = None,
        quantizer: RandomizedQuantization | None = None,
        views: str = "clean_vs_rq",
        temperature: float = 0.2,
        straight_through: bool = True,
        symmetric: bool = True,
        gather_negatives: bool = True,
    ) -> None:
        super().__init__(encoder, optimizer, gather_negatives)
        if views not in VIEWS:
            raise ValueError(f"views must be one of {', '.join(VIEWS)}; got {views!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.quantizer = quantizer if quantizer is not None else RandomizedQuantization(channel_dim=-1)
        self.views, self.temperature = views, temperature
        self.straight_through, self.symmetric = straight_through, symmetric

    def view(self, embeddings: Tensor) -> Tensor:
        """The augmentation: one RQ view of the embeddings (straight-through if configured)."""
        quantized = self.quantizer(embeddings.detach())
        if self.straight_through:
            return embeddings + (quantized - embeddings.detach())
        return quantized

    def loss(self, inputs: Sequence[Tensor]) -> Tensor:
        embeddings = self.encoder.embed(inputs)
        first = self.view(embeddings)
        second = self.view(embeddings) if self.views == "rq_vs_rq" else embeddings
        z_first = self.encoder.encode(first, output="projection")
        z_second = self.encoder.encode(second, output="projection")
        loss = self.contrast(z_first, z_second, self.temperature)
        if self.symmetric:
            loss = (loss + self.contrast(z_second, z_first, self.temperature)) / 2
        return loss

    def settings(self) -> dict:
        q = self.quantizer
        return {
            **super().settings(),
            "views": self.views,
            "temperature": self.temperature,
            "straight_through": self.straight_through,
            "symmetric": self.symmetric,
            "num_bins": q.num_bins,
            "collapse": q.collapse,
            "spacing": q.spacing,
            "p": q.p,
            "channel_dim": q.channel_dim,
            "statistics": q.statistics,
        }
