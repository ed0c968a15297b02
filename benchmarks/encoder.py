"""One training step of the DABS-size encoder: ours vs a DABS-style baseline transformer.

Each case times forward + backward + ``AdamW`` step (lr 1e-4, weight decay 1e-4, as the
pretraining config) of the default DABS encoder (``conf/model/dabs.yaml``: dim 256, depth 12,
8 heads of 64, MLP 512, dropout 0.1, embedding dropout 0.1, 128-d projection) in train mode on
a batch of 64 pre-made token embeddings, through ``encode(embeddings, output="projection")``
and a mean-square loss, at the token counts of the DABS domains (CLS included): 65 (32x32
images in 4x4 patches), 129 (128 text tokens), 197 (224x224 images in 16x16 patches) and 229
(VQA: 196 patches + 32 question tokens).

The baseline is the transformer DABS runs (``src/models/transformer.py`` of
github.com/alextamkin/dabs, lucidrains' ViT): fused qkv ``chunk``-ed and rearranged per head,
``einsum`` scores times the scale, softmax, dropout, ``einsum`` with v, ``nn.Dropout`` modules,
pre-norm residual blocks. DABS's copy has no dropout on the attention weights; ours applies
the block dropout there (as lucidrains' later ViT does), so the baseline here does too and
both compute the same function: it has exactly our parameters (asserted, and our weights are
loaded into it) and its eval-mode output matches ours (``same_output``).

Baseline and ours run interleaved in one process on the same inputs; each row gives the
median step over the repetitions (after warm-up) as samples/s, and ``ratio`` = ours/baseline.
Variants: ``fp32`` (eager), ``bf16-autocast`` (both models under ``torch.autocast``, as
``trainer.precision=bf16-mixed`` runs them) and ``...+compile`` (ours with ``compile=True`` on
CPU, ``compile="reduce-overhead"`` (CUDA graphs) on CUDA; the baseline stays eager). The
optimizer is the same for both: plain ``AdamW`` on CPU, ``AdamW(fused=True)`` on CUDA.
Targets: CPU fp32 at least 1.0x everywhere and 1.3x from 197 tokens; CUDA bf16 autocast at
least 2x. The other variants are measured, not targeted. The full CPU run takes about 5
minutes on 2 cores (the baseline's 229-token step is ~16 s, a CPU compile ~80 s); ``quick``
runs fewer cases, one repetition each, and no compile.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable

import torch
from torch import Tensor, nn

from dabs_rq.encoder.embedders import MultiInputEmbedding, SegmentEmbedding1d
from dabs_rq.encoder.transformer import DomainAgnosticTransformer

TITLE = "Encoder training step"
TOKENS = (65, 129, 197, 229)
BATCH = 64
DABS = {"dim": 256, "depth": 12, "heads": 8, "dim_head": 64, "mlp_dim": 512, "dropout": 0.1,
        "emb_dropout": 0.1, "out_dim": 128}
CPU_TARGET = {65: 1.0, 129: 1.0, 197: 1.3, 229: 1.3}  # fp32 eager, ours / baseline
CUDA_TARGET = 2.0  # bf16 autocast, ours / baseline


# --------------------------------------------------------------------------- the DABS-style baseline


class BaselineAttention(nn.Module):
    """lucidrains' ViT attention as DABS has it, plus dropout on the attention weights."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head**-0.5
        self.attend = nn.Softmax(dim=-1)
        self.dropout = nn.Dropout(dropout)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        # rearrange(t, 'b n (h d) -> b h n d') of each chunk
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        dots = torch.einsum("bhid,bhjd->bhij", q, k) * self.scale
        attn = self.dropout(self.attend(dots))
        out = torch.einsum("bhij,bhjd->bhid", attn, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))  # 'b h n d -> b n (h d)'


class BaselineBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = BaselineAttention(dim, heads, dim_head, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        x = self.attn(self.norm1(x)) + x  # PreNorm(Attention) + residual
        return self.mlp(self.norm2(x)) + x  # PreNorm(FeedForward) + residual


class BaselineEncoder(nn.Module):
    """DABS's DomainAgnosticTransformer (attribute names follow ours so weights load across)."""

    def __init__(self, embedders, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, dropout: float,
                 emb_dropout: float, out_dim: int) -> None:
        super().__init__()
        self.embedding = MultiInputEmbedding(embedders)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, self.embedding.num_tokens + 1, dim))
        self.emb_dropout = nn.Dropout(emb_dropout)
        self.blocks = nn.ModuleList(BaselineBlock(dim, heads, dim_head, mlp_dim, dropout) for _ in range(depth))
        self.projection = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, out_dim))

    def encode(self, embeddings: Tensor, output: str = "projection") -> Tensor:
        b, n, _ = embeddings.shape
        x = torch.cat([self.cls_token.expand(b, -1, -1), embeddings], dim=1)
        x = self.emb_dropout(x + self.pos_embedding[:, : n + 1])
        for block in self.blocks:
            x = block(x)
        return self.projection(x.mean(dim=1))


# --------------------------------------------------------------------------- timing


def _models(tokens: int, device: str, compile_ours: bool | str) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    ours = DomainAgnosticTransformer([SegmentEmbedding1d(DABS["dim"], tokens - 1, 1, 1)], **DABS, compile=compile_ours)
    base = BaselineEncoder([SegmentEmbedding1d(DABS["dim"], tokens - 1, 1, 1)], **DABS)
    n_ours, n_base = (sum(p.numel() for p in m.parameters()) for m in (ours, base))
    assert n_ours == n_base, f"parameter counts differ: ours {n_ours}, baseline {n_base}"
    base.load_state_dict(ours.state_dict())
    return ours.to(device).train(), base.to(device).train()


def _same_output(ours: nn.Module, base: nn.Module, x: Tensor) -> bool:
    ours.eval(), base.eval()
    with torch.no_grad():
        same = torch.allclose(ours.encode(x[:4], output="projection"), base.encode(x[:4]), rtol=1e-4, atol=1e-4)
    ours.train(), base.train()
    return bool(same)


def _step(model: nn.Module, x: Tensor, autocast: bool) -> Callable[[], None]:
    # fused on CUDA: the default (foreach) step took 17-22 ms of a ~50 ms step on the H100 host
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4, fused=x.is_cuda or None)
    amp = torch.autocast(x.device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with amp:
            z = model.encode(x, output="projection")
        z.float().square().mean().backward()
        optimizer.step()

    return step


def _median_seconds(fns: dict[str, Callable[[], None]], device: str, warmup: int, reps: int) -> dict[str, float]:
    """Median wall time of each fn, the fns interleaved so that they share the machine's noise."""
    cuda = device.startswith("cuda")
    times: dict[str, list[float]] = {name: [] for name in fns}
    for rep in range(warmup + reps):
        for name, fn in fns.items():
            torch.manual_seed(rep)
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize(device)
            if rep >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _cases(cuda: bool, quick: bool) -> list[tuple[str, tuple[int, ...], bool | str]]:
    """(variant, token counts, ours' ``compile``): CPU steps are seconds and CPU compiles ~80 s."""
    if cuda:
        return [("fp32", TOKENS, False), ("bf16-autocast", TOKENS, False),
                ("bf16-autocast+compile", TOKENS, "reduce-overhead")]
    if quick:
        return [("fp32", (65, 197), False), ("bf16-autocast", (65,), False)]
    return [("fp32", TOKENS, False), ("bf16-autocast", (65, 197), False), ("fp32+compile", (65,), True)]


def _target(cuda: bool, variant: str, tokens: int) -> float | None:
    if cuda:
        return CUDA_TARGET if variant.startswith("bf16-autocast") else None
    return CPU_TARGET[tokens] if variant == "fp32" else None


def run(device: str = "cpu", quick: bool = False) -> list[dict]:
    cuda = device.startswith("cuda")
    rows = []
    for variant, token_counts, compile_ours in _cases(cuda, quick):
        autocast = variant.startswith("bf16")
        for tokens in token_counts:
            if cuda:
                warmup, reps = (2, 5) if quick else (5, 20)
            else:
                warmup, reps = (1, 1) if quick else (1, 3 if tokens <= 129 else 2)
            ours, base = _models(tokens, device, compile_ours)
            x = torch.randn(BATCH, tokens - 1, DABS["dim"], generator=torch.Generator().manual_seed(1)).to(device)
            same = None if compile_ours else _same_output(ours, base, x)  # (eager; no extra eval compile)
            attention = "sdpa" if compile_ours else ours.blocks[0].attn.path(x)
            if compile_ours:
                _step(ours, x, autocast)()  # compile outside the timing
            seconds = _median_seconds({"ours": _step(ours, x, autocast), "baseline": _step(base, x, autocast)},
                                      device, warmup, reps)
            ratio = seconds["baseline"] / seconds["ours"]
            target = _target(cuda, variant, tokens)
            row = {
                "tokens": tokens,
                "variant": variant,
                "attention": attention,
                "ours_samples_per_s": round(BATCH / seconds["ours"], 2),
                "baseline_samples_per_s": round(BATCH / seconds["baseline"], 2),
                "ratio": round(ratio, 3),
                "target": target,
                "met": None if target is None else ratio >= target,
                "same_output": same,
                "reps": reps,
            }
            rows.append(row)
            print(f"[bench encoder] {row}", flush=True)
            del ours, base
    return rows
