"""One training step of the DABS-size encoder: fp32 eager against bf16 autocast and ``torch.compile``.

Each case times forward + backward + ``AdamW`` step (lr 1e-4, weight decay 1e-4, as the
pretraining config) of the DABS encoder (``conf/model/dabs.yaml``: dim 256, depth 12, 8 heads
of 64, MLP 512, dropout 0.1, embedding dropout 0.1, no attention-weight dropout, 128-d
projection) in train mode on a batch of 64 pre-made token embeddings, through
``encode(embeddings, output="projection")`` and a mean-square loss, at the token counts of the
DABS domains (CLS included): 65 (32x32 images in 4x4 patches), 129 (128 text tokens), 197
(224x224 images in 16x16 patches) and 229 (VQA: 196 patches + 32 question tokens).

Variants: ``fp32`` (eager, the reference), ``bf16-autocast`` (under ``torch.autocast``, as
``trainer.precision=bf16-mixed`` runs it) and ``...+compile`` (``compile=True`` on CPU,
``compile="reduce-overhead"`` (CUDA graphs) on CUDA). Every variant has its own copy of the
same initial weights; they run interleaved in one process on the same inputs. Each row gives
the median step over the repetitions (after warm-up) as samples/s and ``speedup`` = its
samples/s over fp32 eager's at the same token count. Measured, not targeted. The optimizer is
plain ``AdamW`` on CPU, ``AdamW(fused=True)`` on CUDA. A CPU step takes seconds on 2 cores and
a CPU compile about a minute; ``quick`` runs 65 tokens only, one repetition, and no compile.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from dabs_rq.encoder.embedders import SegmentEmbedding1d
from dabs_rq.encoder.transformer import DomainAgnosticTransformer

TITLE = "Encoder training step"
TOKENS = (65, 129, 197, 229)
BATCH = 64
DABS = {
    "dim": 256,
    "depth": 12,
    "heads": 8,
    "dim_head": 64,
    "mlp_dim": 512,
    "dropout": 0.1,
    "emb_dropout": 0.1,
    "attn_dropout": 0.0,
    "out_dim": 128,
}
#: variant -> (bf16 autocast, the encoder's ``compile``)
VARIANTS: dict[str, tuple[bool, bool | str]] = {
    "fp32": (False, False),
    "bf16-autocast": (True, False),
    "fp32+compile": (False, True),
    "bf16-autocast+compile": (True, "reduce-overhead"),
}


def _model(tokens: int, device: str, compile: bool | str) -> nn.Module:
    torch.manual_seed(0)  # the same initial weights for every variant
    model = DomainAgnosticTransformer([SegmentEmbedding1d(DABS["dim"], tokens - 1, 1, 1)], **DABS, compile=compile)
    return model.to(device).train()


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


def _cases(cuda: bool, quick: bool) -> dict[int, tuple[str, ...]]:
    """token count -> the variants measured there (fp32 first, the reference)."""
    if cuda:
        return dict.fromkeys(TOKENS, ("fp32", "bf16-autocast", "bf16-autocast+compile"))
    if quick:
        return {65: ("fp32", "bf16-autocast")}
    return {
        65: ("fp32", "bf16-autocast", "fp32+compile"),
        129: ("fp32",),
        197: ("fp32", "bf16-autocast"),
        229: ("fp32",),
    }


def run(device: str = "cpu", quick: bool = False) -> list[dict]:
    cuda = device.startswith("cuda")
    rows = []
    for tokens, variants in _cases(cuda, quick).items():
        if cuda:
            warmup, reps = (2, 5) if quick else (5, 20)
        else:
            warmup, reps = (1, 1) if quick else (1, 3 if tokens <= 129 else 2)
        x = torch.randn(BATCH, tokens - 1, DABS["dim"], generator=torch.Generator().manual_seed(1)).to(device)
        steps = {}
        for name in variants:
            autocast, compile = VARIANTS[name]
            steps[name] = _step(_model(tokens, device, compile), x, autocast)
            if compile:
                steps[name]()  # compile outside the timing
        seconds = _median_seconds(steps, device, warmup, reps)
        for name in variants:
            row = {
                "tokens": tokens,
                "variant": name,
                "samples_per_s": round(BATCH / seconds[name], 2),
                "speedup": round(seconds["fp32"] / seconds[name], 3),
                "reps": reps,
            }
            rows.append(row)
            print(f"[bench encoder] {row}", flush=True)
        del steps
    return rows
