"""``emix``: e-Mix, DABS's i-Mix on token embeddings (Tamkin et al., 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dabs_rq.algorithms.base import OptimizerFactory, PretrainingAlgorithm
from dabs_rq.errors import UserError


class EMix(PretrainingAlgorithm):
    """Mix each sample's embeddings with a permuted partner's and contrast the mix with the clean batch.

    Exactly the DABS objective: per-sample lambda ~ Beta(alpha, alpha), lambda = max(lambda, 1 - lambda);
    m = lambda*e + (1 - lambda)*e[perm].detach(); logits = norm(z(m)) . norm(z(e))^T / temperature;
    loss = mean(lambda * CE(logits, identity) + (1 - lambda) * CE(logits, perm)).
    """

    def __init__(
        self,
        encoder: nn.Module,
        optimizer: OptimizerFactory | None = None,
        temperature: float = 0.2,
        alpha: float = 1.0,
        gather_negatives: bool = True,
    ) -> None:
        super().__init__(encoder, optimizer, gather_negatives)
        if temperature <= 0:
            raise UserError(f"temperature must be > 0, got {temperature}")
        self.temperature, self.alpha = temperature, alpha

    def mix(self, embeddings: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The augmentation: (mixed embeddings, per-sample lambda, partner permutation)."""
        batch = embeddings.shape[0]
        alpha = torch.tensor(self.alpha, device=embeddings.device)
        lam = torch.distributions.Beta(alpha, alpha).sample((batch,))
        lam = torch.maximum(lam, 1 - lam)
        perm = torch.randperm(batch, device=embeddings.device)
        lam_e = lam.view(batch, 1, 1).to(embeddings.dtype)
        return lam_e * embeddings + (1 - lam_e) * embeddings[perm].detach(), lam, perm

    def loss(self, inputs: Sequence[Tensor]) -> Tensor:
        embeddings = self.encoder.embed(inputs)
        mixed, lam, perm = self.mix(embeddings)
        z_mixed = F.normalize(self.encoder.encode(mixed, output="projection"), dim=1)
        z_clean = F.normalize(self.encoder.encode(embeddings, output="projection"), dim=1)
        # Under DDP the clean keys of every rank are negatives; mixing partners stay on this rank.
        all_clean, offset = self.all_keys(z_clean)
        logits = z_mixed @ all_clean.T / self.temperature
        identity = torch.arange(embeddings.shape[0], device=embeddings.device) + offset
        per_sample = lam * F.cross_entropy(logits, identity, reduction="none") + (1 - lam) * F.cross_entropy(
            logits, perm + offset, reduction="none"
        )
        return per_sample.mean()
