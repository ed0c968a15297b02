"""The domain-agnostic transformer of DABS (pre-LN ViT blocks), with a per-shape attention path.

Attention paths (``attention=`` of :class:`DomainAgnosticTransformer`, set in the model config):

* ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention``. On CUDA its fused kernels
  include dropout; on CPU its fused (flash) kernel runs only without dropout: with dropout > 0
  it falls back to ATen's unfused math, which materialises the [B, H, N, N] scores, probabilities
  and mask.
* ``"math"``: the explicit ``softmax(q k^T / sqrt(d)) v`` of lucidrains' ViT (DABS's attention),
  with the cheap CPU dropout mask below.
* ``"chunked"``: a CPU kernel (:class:`ChunkedAttention`) that walks (head, batch-slice) chunks
  small enough for the scores to stay in cache, on one single-threaded worker per torch thread,
  keeps only a uint8 dropout mask and recomputes the probabilities in backward (as flash
  attention does). CPU eager only; elsewhere it runs as ``math``.
* ``"auto"`` (default): :func:`choose_attention` picks by device, sequence length and dropout,
  with the threshold measured by ``benchmarks/encoder.py``.

Every path computes the same function (eval outputs agree to float tolerance; tests check it).
Dropout (``dropout``) is applied in the output projection and the MLP, as in DABS; dropout on the
attention weights after the softmax (``attn_dropout``) is a separate setting: DABS's encoder has
none (``attn_dropout=0``, the DABS model config), ``attn_dropout=0.1`` gives this project's
earlier encoder, which had it. In CPU eager training the dropout masks come from :func:`keep_mask` (16-bit
lanes of the default generator: ``p`` is rounded to a multiple of 2**-16, and kept values are
rescaled by the exact 1/(1-p') of that rounded rate), with the rescaling folded into the next
matrix product or the residual add; on other devices, under ``torch.compile`` and in eval mode,
dropout is ``F.dropout``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dabs_rq.encoder.embedders import MultiInputEmbedding
from dabs_rq.errors import UserError

POOLING = ("mean", "cls")
ATTENTION = ("auto", "sdpa", "math", "chunked")

#: Bytes of one chunk of attention scores on the ``chunked`` path. On the 2-core Xeon of
#: ``benchmarks/encoder.py`` (2 MiB L2 per core) 1-8 MiB were within noise of each other at
#: 129-229 tokens, 4 MiB at or near the best; 0.25-0.5 MiB were slower.
CHUNK_BYTES = 4 << 20
#: ... and at least this many chunks per call, so that worker threads share them out evenly.
MIN_CHUNKS = 16

# --------------------------------------------------------------------------- dropout masks


def _lanes_dropped(p: float) -> int:
    """How many of the 2**16 values of a 16-bit lane count as "dropped" for rate ``p``."""
    return round(p * 65536)


def fast_dropout(x: Tensor, p: float, training: bool) -> bool:
    """Whether dropout on ``x`` takes the CPU mask path (eager CPU training, 0 < p < 1)."""
    return (training and x.device.type == "cpu" and 0 < _lanes_dropped(p) < 65536
            and not torch.compiler.is_compiling())


def keep_scale(p: float) -> float:
    """The rescaling 1/(1-p') of kept values, p' the rate :func:`keep_mask` actually draws."""
    return 65536.0 / (65536 - _lanes_dropped(p))


def keep_mask(shape: Sequence[int], p: float, out: Tensor | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """A CPU mask of ``shape``: 1 where an element is kept (probability 1-p'), 0 where dropped.

    Each 64-bit draw of the default generator (so ``torch.manual_seed`` fixes it) gives four
    16-bit lanes, compared with ``p' = round(p * 2**16) / 2**16``: 3-4x faster than
    ``bernoulli_`` on CPU. Written into ``out`` (any dtype, e.g. uint8 or float) when given.
    """
    numel = 1
    for s in shape:
        numel *= int(s)
    bits = torch.empty((numel + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
    lanes = bits.view(torch.int16)[:numel].view(*shape)
    threshold = torch.tensor(-32768 + _lanes_dropped(p), dtype=torch.int16)
    if out is None:
        out = torch.empty(*shape, dtype=dtype)
    return torch.ge(lanes, threshold, out=out)


def dropout_add(x: Tensor, y: Tensor, p: float, training: bool) -> Tensor:
    """``x + dropout(y)`` in one pass on the CPU path."""
    if fast_dropout(y, p, training):
        return torch.addcmul(x, y, keep_mask(y.shape, p, dtype=y.dtype), value=keep_scale(p))
    return x + F.dropout(y, p, training)


def linear(x: Tensor, layer: nn.Linear, alpha: float = 1.0) -> Tensor:
    """``layer(alpha * x)``, with ``alpha`` folded into the (small) weight: no pass over ``x``."""
    return F.linear(x, layer.weight if alpha == 1.0 else layer.weight * alpha, layer.bias)


# --------------------------------------------------------------------------- attention kernels


class ChunkedAttention(torch.autograd.Function):
    """Cache-blocked multi-head attention on the CPU, attention dropout included.

    Input: the fused projection ``qkv`` [B, N, 3*H*D] (q, k, v, then heads, as ``to_qkv`` makes
    it); output: ``A v`` [B, N, H*D] with ``A = dropout_mask * softmax(q k^T / sqrt(D))`` *without*
    the 1/(1-p') rescaling (the caller folds it into the output projection). Every chunk is one
    head of a slice of the batch, copied into small contiguous buffers, so its scores [g, N, N]
    stay in cache; only a uint8 dropout mask is kept for backward, which recomputes the
    probabilities and uses rowsum(dO * O) for the softmax gradient (as flash attention does).

    The chunks are shared out to ``torch.get_num_threads()`` worker threads, each running its
    ops single-threaded: thousands of small ops with a thread barrier each would stall whenever
    another process holds a core. Chunk c's mask is drawn from its own generator, seeded with
    one draw of the default generator plus c, so masks do not depend on the thread count.
    """

    @staticmethod
    def forward(ctx, qkv: Tensor, heads: int, p: float) -> Tensor:  # type: ignore[override]
        b, n, width = qkv.shape
        d = width // (3 * heads)
        scale = d**-0.5
        x = qkv.view(b, n, 3, heads, d)
        out = torch.empty(b, n, heads * d, dtype=qkv.dtype)
        o = out.view(b, n, heads, d)
        g = _chunk(b, n, qkv.element_size(), heads)
        mask = torch.empty(heads, b, n, n, dtype=torch.uint8) if p > 0 else None
        seed = int(torch.empty((), dtype=torch.int64).random_(0, 2**62)) if p > 0 else 0

        def work(chunks: list[tuple[int, int, slice]]) -> None:
            scores, probs = torch.empty(2, g, n, n, dtype=qkv.dtype)
            qb, kb, vb, ob = torch.empty(4, g, n, d, dtype=qkv.dtype)
            for c, j, rows in chunks:
                m = rows.stop - rows.start
                s, a, q, k, v, ot = scores[:m], probs[:m], qb[:m], kb[:m], vb[:m], ob[:m]
                torch.mul(x[rows, :, 0, j], scale, out=q)
                k.copy_(x[rows, :, 1, j])
                v.copy_(x[rows, :, 2, j])
                torch.bmm(q, k.transpose(1, 2), out=s)
                torch.softmax(s, -1, out=a)
                if mask is not None:
                    a.mul_(chunk_keep_mask(mask[j, rows], p, seed + c))
                torch.bmm(a, v, out=ot)
                o[rows, :, j].copy_(ot)

        _run_chunks(work, _chunks(b, heads, g))
        ctx.save_for_backward(qkv, out, mask)
        ctx.heads = heads
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        qkv, out, mask = ctx.saved_tensors
        heads = ctx.heads
        b, n, width = qkv.shape
        d = width // (3 * heads)
        scale = d**-0.5
        x = qkv.view(b, n, 3, heads, d)
        go = grad.contiguous().view(b, n, heads, d)
        rowdot = (go * out.view(b, n, heads, d)).sum(-1)  # [B, N, H]: sum_j dA_ij A_ij
        dqkv = torch.empty_like(qkv)
        dx = dqkv.view(b, n, 3, heads, d)
        g = _chunk(b, n, qkv.element_size(), heads)

        def work(chunks: list[tuple[int, int, slice]]) -> None:
            scores, probs, dattn = torch.empty(3, g, n, n, dtype=qkv.dtype)
            kept, keep = torch.empty(2, g, n, n, dtype=qkv.dtype) if mask is not None else (None, None)
            qb, kb, vb, gb, tb = torch.empty(5, g, n, d, dtype=qkv.dtype)
            for _, j, rows in chunks:
                m = rows.stop - rows.start
                s, a, da, q, k, v, dout, t = (buf[:m] for buf in (scores, probs, dattn, qb, kb, vb, gb, tb))
                torch.mul(x[rows, :, 0, j], scale, out=q)
                k.copy_(x[rows, :, 1, j])
                v.copy_(x[rows, :, 2, j])
                dout.copy_(go[rows, :, j])
                torch.bmm(q, k.transpose(1, 2), out=s)
                torch.softmax(s, -1, out=a)
                if mask is not None:
                    keep_m = keep[:m].copy_(mask[j, rows])
                    attn = torch.mul(a, keep_m, out=kept[:m])
                else:
                    attn = a
                dx[rows, :, 2, j].copy_(torch.bmm(attn.transpose(1, 2), dout, out=t))
                torch.bmm(dout, v.transpose(1, 2), out=da)
                if mask is not None:
                    da.mul_(keep_m)
                da.sub_(rowdot[rows, :, j].unsqueeze(-1)).mul_(a)  # softmax backward: dS
                torch.mul(torch.bmm(da, k, out=t), scale, out=dx[rows, :, 0, j])
                dx[rows, :, 1, j].copy_(torch.bmm(da.transpose(1, 2), q, out=t))  # q holds scale * q

        _run_chunks(work, _chunks(b, heads, g))
        return dqkv, None, None


def chunk_keep_mask(out: Tensor, p: float, seed: int) -> Tensor:
    """:func:`keep_mask` of one chunk, drawn from a generator seeded with ``seed``."""
    numel = out.numel()
    bits = torch.empty((numel + 3) // 4, dtype=torch.int64)
    bits.random_(-(2**63), None, generator=torch.Generator().manual_seed(seed))
    threshold = torch.tensor(-32768 + _lanes_dropped(p), dtype=torch.int16)
    return torch.ge(bits.view(torch.int16)[:numel].view(out.shape), threshold, out=out)


def _chunk(batch: int, tokens: int, itemsize: int, heads: int = 1) -> int:
    """Batch rows per chunk: as many as fit CHUNK_BYTES of scores, split evenly, and at least
    MIN_CHUNKS chunks in all (load balance over worker threads). Independent of the thread
    count, so that the dropout masks (seeded per chunk) are too."""
    rows = max(1, min(batch, CHUNK_BYTES // (tokens * tokens * itemsize)))
    spans = min(batch, max(-(-batch // rows), -(-MIN_CHUNKS // heads)))
    return -(-batch // spans)


def _chunks(batch: int, heads: int, rows: int) -> list[tuple[int, int, slice]]:
    """(index, head, batch slice) of every chunk."""
    spans = [slice(i, min(i + rows, batch)) for i in range(0, batch, rows)]
    return [(c, j, span) for c, (j, span) in enumerate((j, span) for j in range(heads) for span in spans)]


_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0


def _run_chunks(work, chunks: list) -> None:
    """``work`` over ``chunks``, split between ``torch.get_num_threads()`` single-threaded workers."""
    global _POOL, _POOL_SIZE
    workers = min(torch.get_num_threads(), len(chunks))
    if workers <= 1:
        work(chunks)
        return
    if _POOL is None or _POOL_SIZE < workers - 1:
        if _POOL is not None:
            _POOL.shutdown(wait=False)
        _POOL, _POOL_SIZE = ThreadPoolExecutor(workers - 1, thread_name_prefix="chunked-attention"), workers - 1
    threads = torch.get_num_threads()

    def single_threaded(part: list) -> None:
        torch.set_num_threads(1)  # per thread (OpenMP), and the pool's threads run nothing else
        with torch.no_grad():  # grad mode is per thread; the chunks' ops are not recorded
            work(part)

    torch.set_num_threads(1)
    try:
        futures = [_POOL.submit(single_threaded, chunks[i::workers]) for i in range(1, workers)]
        work(chunks[0::workers])
        for future in futures:
            future.result()
    finally:
        torch.set_num_threads(threads)


#: On CPU with dropout, ``auto`` uses ``math`` below this many tokens and ``chunked`` from it on
#: (DABS size, 2-core Xeon: ``math`` wins at 65 and 97 tokens, ``chunked`` at 129 and beyond).
CHUNKED_MIN_TOKENS = 112


def choose_attention(tokens: int, device: torch.device, dropout_p: float) -> str:
    """The ``auto`` attention path for a sequence of ``tokens`` (CLS included).

    * not on CPU, or under ``torch.compile``: ``sdpa`` (CUDA's fused kernels include dropout);
    * CPU without dropout (eval mode, or dropout 0): ``sdpa`` (the fused flash kernel; it beat
      ``math`` and ``chunked`` at every DABS length, train and eval);
    * CPU with dropout: ``math`` below :data:`CHUNKED_MIN_TOKENS` tokens, else ``chunked``
      (SDPA falls back to unfused math with dropout on CPU). Same rule under bf16 autocast.
    """
    if device.type != "cpu" or torch.compiler.is_compiling() or dropout_p == 0.0:
        return "sdpa"
    return "math" if tokens < CHUNKED_MIN_TOKENS else "chunked"


class Attention(nn.Module):
    """Multi-head self-attention with a selectable kernel (see the module docstring).

    Returns the output projection *before* its dropout (the block fuses that dropout into the
    residual add).
    """

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float, attention: str = "auto",
                 attn_dropout: float = 0.0) -> None:
        super().__init__()
        if attention not in ATTENTION:
            raise UserError(f"attention must be one of {', '.join(ATTENTION)}; got {attention!r}")
        self.heads, self.dim_head, self.attention = heads, dim_head, attention
        self.dropout = attn_dropout  # on the attention weights; ``dropout`` is the output projection's
        self.scale = dim_head**-0.5
        inner = heads * dim_head
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def path(self, x: Tensor) -> str:
        """The attention path a call on ``x`` takes (``attention``, or what ``auto`` picks).

        ``chunked`` needs eager CPU and, with dropout, the CPU mask path; elsewhere it runs as
        ``math`` (the same function).
        """
        p = self.dropout if self.training else 0.0
        path = self.attention if self.attention != "auto" else choose_attention(x.shape[1], x.device, p)
        if path == "chunked" and (x.device.type != "cpu" or torch.compiler.is_compiling()
                                  or (p > 0 and not fast_dropout(x, p, True))):
            return "math"
        return path

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        p = self.dropout if self.training else 0.0
        path = self.path(x)
        qkv = self.to_qkv(x)
        alpha = 1.0  # dropout rescaling of the attention weights, folded into the output projection
        if path == "chunked":
            with torch.autocast("cpu", enabled=False):  # float32 scores, as autocast's softmax
                wide = qkv if qkv.dtype in (torch.float32, torch.float64) else qkv.float()
                out = ChunkedAttention.apply(wide, self.heads, p).to(qkv.dtype)
            alpha = keep_scale(p) if p > 0 else 1.0
        else:
            q, k, v = qkv.view(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4).unbind(0)
            if path == "sdpa":
                out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
            else:
                attn = torch.matmul(q * self.scale, k.transpose(-2, -1)).softmax(dim=-1)
                if fast_dropout(attn, p, self.training):
                    attn = attn * keep_mask(attn.shape, p, dtype=attn.dtype)
                    alpha = keep_scale(p)
                else:
                    attn = F.dropout(attn, p, self.training)
                out = torch.matmul(attn, v)
            out = out.transpose(1, 2).reshape(b, n, self.heads * self.dim_head)
        return linear(out, self.to_out[0], alpha)


class Block(nn.Module):
    """Pre-LayerNorm transformer block (attention + GELU MLP, residual)."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float, attention: str = "auto",
                 attn_dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dim_head, dropout, attention, attn_dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        p = self.dropout
        x = dropout_add(x, self.attn(self.norm1(x)), p, self.training)
        h = self.mlp[1](self.mlp[0](self.norm2(x)))
        alpha = 1.0
        if fast_dropout(h, p, self.training):
            h = h.mul_(keep_mask(h.shape, p, dtype=h.dtype))  # GELU's backward needs its input, not h
            alpha = keep_scale(p)
        else:
            h = self.mlp[2](h)
        return dropout_add(x, linear(h, self.mlp[3], alpha), p, self.training)


class DomainAgnosticTransformer(nn.Module):
    """One encoder for every domain; only ``embedding`` depends on the input.

    ``embed`` maps raw inputs to token embeddings [B, L, dim] (where RQ and e-Mix act);
    ``encode`` runs the transformer on embeddings and returns pooled features
    (``output="pooled"``, DABS's *prehead*: mean over all positions, CLS included),
    per-position features (``"tokens"``) or the SSL projection (``"projection"``).
    ``attention`` picks the attention kernel (see the module docstring) and ``compile`` (opt-in:
    ``True`` or a ``torch.compile`` mode, e.g. ``"reduce-overhead"`` for CUDA graphs) runs
    ``encode`` through ``torch.compile``; both change speed, not the function computed. Mixed
    precision is the trainer's (``trainer.precision=bf16-mixed``): every path runs under autocast.
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
        attention: str = "auto",
        compile: bool | str = False,
    ) -> None:
        super().__init__()
        if pool not in POOLING:
            raise UserError(f"pool must be one of {', '.join(POOLING)}; got {pool!r}")
        if attention not in ATTENTION:
            raise UserError(f"attention must be one of {', '.join(ATTENTION)}; got {attention!r}")
        for name, p in (("dropout", dropout), ("emb_dropout", emb_dropout), ("attn_dropout", attn_dropout)):
            if not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
                raise UserError(f"{name} must be a number in [0, 1), got {p!r}")
        self.dim, self.out_dim, self.pool, self.attention = dim, out_dim, pool, attention
        self.embedding = MultiInputEmbedding(embedders)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, self.embedding.num_tokens + 1, dim))
        self.emb_dropout = nn.Dropout(emb_dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, dim_head, mlp_dim, dropout, attention, attn_dropout)
                                    for _ in range(depth))
        self.projection = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, out_dim))
        self.compile_mode = compile  # (nn.Module.compile is a method)
        self._compiled_encode = None

    def embed(self, inputs: Sequence[Tensor]) -> Tensor:
        return self.embedding(inputs)

    def encode(self, embeddings: Tensor, output: str = "pooled") -> Tensor:
        if output not in ("pooled", "tokens", "projection"):
            raise ValueError(f"output must be 'pooled', 'tokens' or 'projection'; got {output!r}")
        if not self.compile_mode:
            return self._encode(embeddings, output)
        if self._compiled_encode is None:  # compiled on first use (True, or a torch.compile mode)
            mode = None if self.compile_mode is True else str(self.compile_mode)
            self._compiled_encode = torch.compile(self._encode, mode=mode)
        return self._compiled_encode(embeddings, output)

    def _encode(self, embeddings: Tensor, output: str) -> Tensor:
        cls = self.cls_token.expand(embeddings.shape[0], -1, -1)
        x = torch.cat([cls, embeddings], dim=1) + self.pos_embedding
        p = self.emb_dropout.p
        if fast_dropout(x, p, self.training):
            x = x.mul_(keep_mask(x.shape, p, dtype=x.dtype).mul_(keep_scale(p)))
        else:
            x = self.emb_dropout(x)
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
        return self.embedding.spec()
