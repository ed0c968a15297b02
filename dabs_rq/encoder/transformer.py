"""The domain-agnostic transformer of DABS (pre-LN ViT blocks), with SDPA attention."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dabs_rq.encoder.embedders import MultiInputEmbedding

POOLING = ("mean", "cls")


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention`` (fused kernels)."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dim_head, self.dropout = heads, dim_head, dropout
        inner = heads * dim_head
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        qkv = self.to_qkv(x).view(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], dropout_p=self.dropout if self.training else 0.0
        )
        return self.to_out(out.transpose(1, 2).reshape(b, n, self.heads * self.dim_head))


class Block(nn.Module):
    """Pre-LayerNorm transformer block (attention + GELU MLP, residual)."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dim_head, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DomainAgnosticTransformer(nn.Module):
    """One encoder for every domain; only ``embedding`` depends on the input.

    ``embed`` maps raw inputs to token embeddings [B, L, dim] (where RQ and e-Mix act);
    ``encode`` runs the transformer on embeddings and returns pooled features
    (``output="pooled"``, DABS's *prehead*: mean over all positions, CLS included),
    per-position features (``"tokens"``) or the SSL projection (``"projection"``).
    """

    def __init__(
        self,
        embedders: Sequence[nn.Module],
        dim: int = 256,
        depth: int = 12,
        heads: int = 8,
        dim_head: int = 64,
        mlp_dim: int = 512,
        dropout: float = 0.1,
        emb_dropout: float = 0.1,
        out_dim: int = 128,
        pool: str = "mean",
    ) -> None:
        super().__init__()
        if pool not in POOLING:
            raise ValueError(f"pool must be one of {', '.join(POOLING)}; got {pool!r}")
        self.dim, self.out_dim, self.pool = dim, out_dim, pool
        self.embedding = MultiInputEmbedding(embedders)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, self.embedding.num_tokens + 1, dim))
        self.emb_dropout = nn.Dropout(emb_dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, dim_head, mlp_dim, dropout) for _ in range(depth))
        self.projection = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, out_dim))

    def embed(self, inputs: Sequence[Tensor]) -> Tensor:
        return self.embedding(inputs)

    def encode(self, embeddings: Tensor, output: str = "pooled") -> Tensor:
        cls = self.cls_token.expand(embeddings.shape[0], -1, -1)
        x = torch.cat([cls, embeddings], dim=1) + self.pos_embedding
        x = self.emb_dropout(x)
        for block in self.blocks:
            x = block(x)
        if output == "tokens":
            return x
        pooled = x.mean(dim=1) if self.pool == "mean" else x[:, 0]
        if output == "pooled":
            return pooled
        if output == "projection":
            return self.projection(pooled)
        raise ValueError(f"output must be 'pooled', 'tokens' or 'projection'; got {output!r}")

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """Pooled features of raw inputs (what the linear probe sees)."""
        return self.encode(self.embed(inputs))

    def input_spec(self) -> list[dict]:
        return self.embedding.spec()
