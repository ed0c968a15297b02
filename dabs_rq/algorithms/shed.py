"""``shed``: Shuffled Embedding Detection (DABS 1.0's ELECTRA-like baseline).

Per sample, ``ceil(L * corruption_rate)`` token embeddings are cyclically rolled among their
positions (a derangement of those positions: each moved embedding lands elsewhere), the whole
sequence is encoded, and a per-token ``Linear(dim, 2)`` head (CLS dropped) predicts whether each
position holds a moved embedding; cross-entropy over all positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dabs_rq.algorithms.base import OptimizerFactory, PretrainingAlgorithm
from dabs_rq.algorithms.masking import check_corruption_rate, corrupted_positions


class ShED(PretrainingAlgorithm):
    def __init__(
        self, encoder: nn.Module, optimizer: OptimizerFactory | None = None, corruption_rate: float = 0.15
    ) -> None:
        super().__init__(encoder, optimizer, gather_negatives=False)
        self.corruption_rate = check_corruption_rate(corruption_rate)
        self.head = nn.Linear(encoder.dim, 2)

    def shuffle(self, embeddings: Tensor) -> tuple[Tensor, Tensor]:
        """(embeddings with the chosen positions rolled among themselves, 0/1 moved labels [B, L])."""
        batch, length, _ = embeddings.shape
        chosen = corrupted_positions(batch, length, self.corruption_rate, embeddings.device)
        rows = torch.arange(batch, device=embeddings.device)[:, None]
        shuffled = embeddings.clone()
        shuffled[rows, chosen] = embeddings[rows, chosen.roll(1, dims=1)]
        labels = torch.zeros(batch, length, dtype=torch.long, device=embeddings.device)
        if chosen.shape[1] > 1:  # rolling one position onto itself moves nothing
            labels[rows, chosen] = 1
        return shuffled, labels

    def loss(self, inputs: Sequence[Tensor]) -> Tensor:
        shuffled, labels = self.shuffle(self.encoder.embed(inputs))
        tokens = self.encoder.encode(shuffled, output="tokens")[:, 1:]
        logits = self.head(tokens)
        return F.cross_entropy(logits.reshape(-1, 2).float(), labels.reshape(-1))
