"""``mae``: masked embedding reconstruction (DABS 2.0's MAE).

Per sample, ``ceil(L * corruption_rate)`` token embeddings are zeroed (no mask token; the whole
sequence is still encoded). At masked positions the per-token outputs (CLS dropped) predict the
input there: for continuous inputs (image patches, spectrogram patches, sensor segments) a
``ReLU + Linear(dim, patch_dim)`` head predicts the raw flattened patch, loss = mean L2 norm (not
squared) of the error; for token inputs the logits are the output times the (tied) token
embedding table, loss = cross-entropy against the token id. With several inputs (image + text)
the loss is the mean over the inputs that have masked positions in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dabs_rq.algorithms.base import OptimizerFactory, PretrainingAlgorithm
from dabs_rq.algorithms.masking import check_corruption_rate, corrupted_positions
from dabs_rq.encoder.embedders import TokenEmbedding


class MAE(PretrainingAlgorithm):
    def __init__(
        self, encoder: nn.Module, optimizer: OptimizerFactory | None = None, corruption_rate: float = 0.15
    ) -> None:
        super().__init__(encoder, optimizer, gather_negatives=False)
        self.corruption_rate = check_corruption_rate(corruption_rate)
        embedders = list(encoder.embedding.embedders)
        self.heads = nn.ModuleList(
            nn.Identity()
            if isinstance(e, TokenEmbedding)
            else nn.Sequential(nn.ReLU(), nn.Linear(encoder.dim, e.patch_dim))
            for e in embedders
        )

    def loss(self, inputs: Sequence[Tensor]) -> Tensor:
        embeddings = self.encoder.embed(inputs)
        batch, length, _ = embeddings.shape
        chosen = corrupted_positions(batch, length, self.corruption_rate, embeddings.device)
        masked = torch.zeros(batch, length, dtype=torch.bool, device=embeddings.device)
        masked[torch.arange(batch, device=embeddings.device)[:, None], chosen] = True
        outputs = self.encoder.encode(embeddings.masked_fill(masked[..., None], 0.0), output="tokens")[:, 1:]
        losses, start = [], 0
        for embedder, head, x in zip(self.encoder.embedding.embedders, self.heads, inputs):
            stop = start + embedder.num_tokens
            where = masked[:, start:stop]
            if where.any():
                out = outputs[:, start:stop][where].float()
                if isinstance(embedder, TokenEmbedding):
                    logits = out @ embedder.table.weight.float().T
                    losses.append(F.cross_entropy(logits, x.long()[where]))
                else:
                    target = embedder.patchify(x.float())[where]
                    losses.append((head(out) - target).norm(dim=-1).mean())
            start = stop
        return torch.stack(losses).mean()
