"""The domain-agnostic transformer of DABS: pre-LayerNorm ViT blocks over any domain's tokens.

The architecture of DABS's ``src/models/transformer.py`` (lucidrains' ViT): a CLS token and
learned position embeddings, ``depth`` blocks of multi-head self-attention and a GELU MLP, each
with a pre-LayerNorm and a residual, mean (or CLS) pooling and a LayerNorm + Linear SSL head.
Attention is ``torch.nn.functional.scaled_dot_product_attention`` (SDPA): the same function as
``softmax(q k^T / sqrt(d)) v``, on fused kernels where the device has them.

Dropout: ``dropout`` after the attention's output projection and in the MLP (as DABS),
``emb_dropout`` on the embeddings, and ``attn_dropout`` on the attention weights after the
softmax (SDPA's ``dropout_p``). DABS's encoder has no attention-weight dropout (``attn_dropout=0``,
``conf/model/dabs.yaml``); 0.1 is this project's earlier encoder, kept as an option.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dabs_rq.compile_setting import check_compile, compile_mode, resolve_compile
from dabs_rq.encoder.embedders import MultiInputEmbedding
from dabs_rq.errors import UserError

POOLING = ("mean", "cls")
OUTPUTS = ("pooled", "tokens", "projection")
#: What ``compile="auto"`` runs the encoder with on CUDA: ``torch.compile``'s default mode (fused kernels, no CUDA
#: graphs, so no output of one call is overwritten by the next: the transfer stage keeps features across calls).
#: On a CPU ``auto`` is off.
AUTO_COMPILE_CUDA: bool | str = True


class Attention(nn.Module):
    """Multi-head self-attention through SDPA; ``dropout`` is the rate on the attention weights."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float, attn_dropout: float = 0.0) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.dropout = attn_dropout  # a rate, not a module: SDPA applies it (``dropout`` is the projection's)
        self.to_qkv = nn.Linear(dim, heads * dim_head * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        # fused projection [B, N, 3*H*D] (q, k, v, then heads) -> three [B, H, N, D]
        q, k, v = self.to_qkv(x).view(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.to_out(out.transpose(1, 2).reshape(b, n, self.heads * self.dim_head))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(
        self, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float, attn_dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.dropout = dropout  # the rate of the projection and MLP dropout (for inspection)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dim_head, dropout, attn_dropout)
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
    per-position features (``"tokens"``, CLS first) or the SSL projection (``"projection"``).
    ``compile`` (``True`` or a ``torch.compile`` mode, e.g. ``"reduce-overhead"`` for CUDA graphs,
    or ``"auto"``: on for CUDA (:data:`AUTO_COMPILE_CUDA`), off on a CPU, resolved at each call from
    the embeddings' device) runs ``encode`` through ``torch.compile``: it changes speed, not the
    function computed. ``torch.compile`` is called on the first compiled call (once per mode).
    Mixed precision is the trainer's (``trainer.precision=bf16-mixed``).
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
        attn_dropout: float = 0.0,
        out_dim: int = 128,
        pool: str = "mean",
        compile: bool | str = False,
    ) -> None:
        super().__init__()
        if pool not in POOLING:
            raise UserError(f"pool must be one of {', '.join(POOLING)}; got {pool!r}")
        for name, p in (("dropout", dropout), ("emb_dropout", emb_dropout), ("attn_dropout", attn_dropout)):
            if not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
                raise UserError(f"{name} must be a number in [0, 1), got {p!r}")
        self.dim, self.out_dim, self.pool = dim, out_dim, pool
        self.embedding = MultiInputEmbedding(embedders)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, self.embedding.num_tokens + 1, dim))
        self.emb_dropout = nn.Dropout(emb_dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, dim_head, mlp_dim, dropout, attn_dropout) for _ in range(depth))
        self.projection = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, out_dim))
        self.compile_mode = check_compile(compile)  # (nn.Module.compile is a method)
        self._compiled_encode: dict[bool | str, object] = {}  # per resolved mode

    def embed(self, inputs: Sequence[Tensor]) -> Tensor:
        """Token embeddings [B, L, dim] of the raw inputs (one tensor per domain input)."""
        return self.embedding(inputs)

    def encode(self, embeddings: Tensor, output: str = "pooled") -> Tensor:
        """The transformer on token embeddings: pooled features, every token's, or the projection."""
        if output not in OUTPUTS:
            raise ValueError(f"output must be 'pooled', 'tokens' or 'projection'; got {output!r}")
        mode = self.compile_on(embeddings.device)
        if not mode:
            return self._encode(embeddings, output)
        compiled = self._compiled_encode.get(mode)
        if compiled is None:  # compiled on first use (True, or a torch.compile mode)
            compiled = torch.compile(self._encode, mode=compile_mode(mode))
            self._compiled_encode[mode] = compiled
        return compiled(embeddings, output)

    def compile_on(self, device: torch.device | str) -> bool | str:
        """What ``encode`` runs with on ``device``: False (eager), True (``torch.compile``) or a mode."""
        return resolve_compile(self.compile_mode, torch.device(device), AUTO_COMPILE_CUDA)

    def _encode(self, embeddings: Tensor, output: str) -> Tensor:
        cls = self.cls_token.expand(embeddings.shape[0], -1, -1)
        x = self.emb_dropout(torch.cat([cls, embeddings], dim=1) + self.pos_embedding)
        for block in self.blocks:
            x = block(x)
        if output == "tokens":
            return x
        pooled = x.mean(dim=1) if self.pool == "mean" else x[:, 0]
        return pooled if output == "pooled" else self.projection(pooled)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """Pooled features of raw inputs (what the linear probe sees)."""
        return self.encode(self.embed(inputs))

    def input_spec(self) -> list[dict]:
        """The embedders' input specs, in input order."""
        return self.embedding.spec()
