"""Speed and memory of the RQ operator (``dabs_rq.ops.randomized_quantization``) against the reference.

Baseline: ``tests.reference.reference_quantize``, the reference module of microsoft/random_quantize
(credited there; a [B*C, num_bins, H, W] membership mask + argmax). It only takes
(B, C, H, W) inputs, so for the token embeddings [B, T, D] (``channel_dim=-1``, statistics per
sample and dimension over the tokens) it gets the equivalent layout
``x.transpose(1, 2).unsqueeze(-1).contiguous()`` = (B, D, T, 1), made outside the timing.
The floor is ``x.clone()`` (one read and one write of the input, allocation included).

Default RQ settings (num_bins=8, random spacing, inside_random proxies), float32. Times are
medians after warm-up (``torch.cuda.synchronize`` on GPU). Peak extra memory is what the call
allocates beyond its input, output included: on CPU the running sum of the allocation/free
events of ``torch.profiler`` (profile_memory), on CUDA ``torch.cuda.max_memory_allocated``
minus what was allocated before the call. ``exact`` checks, on the first two samples, that the
deterministic mode (uniform spacing, middle proxies) equals the reference bit for bit.

Opt-in paths get their own columns (``<name>_ms``, ``ref/<name>``, ``<name>/clone``,
``<name>_met``; ``met`` is the default eager path): ``compiled`` = ``compile=True`` (torch.compile
fuses the operator); on CUDA also ``reduce_overhead`` = ``compile="reduce-overhead"`` (the compiled
operator replayed as a CUDA graph). The first call compiles / captures and is not timed.

Only torch, the standard library and the RQ modules (operator and oracle) are imported, so this
runs on a bare GPU machine too.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from dabs_rq.ops.randomized_quantization import randomized_quantization
from tests.reference import reference_quantize

TITLE = "RQ operator"
NUM_BINS = 8
# (shape, channel_dim): images (B, C, H, W) and the token embeddings of pretraining (B, T, D).
CASES = [
    ((256, 3, 32, 32), 1),
    ((64, 3, 224, 224), 1),
    ((64, 197, 256), -1),
    ((128, 129, 256), -1),
    ((256, 65, 256), -1),
]
# GPU only, beyond the list: a batch large enough for the reference to be bound by memory
# traffic rather than by kernel launches (at the listed sizes both are launch-bound on a GPU).
CUDA_EXTRA_CASES = [((256, 3, 224, 224), 1)]
CPU_TARGET = "ref/ours >= 30 and ours/clone <= 10"
CUDA_TARGET = "ref/ours >= 20"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _median_ms(fn: Callable[[], object], device: str, reps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _peak_extra_bytes(fn: Callable[[], object], device: str) -> int:
    """Peak of the bytes allocated by ``fn`` and still alive, output included."""
    if device.startswith("cuda"):
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    cpu = torch._C._autograd.DeviceType.CPU
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == cpu
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def _variant_works(device: str, **options) -> bool:
    try:
        randomized_quantization(torch.randn(2, 3, 4, 4, device=device), NUM_BINS, **options)
        return True
    except Exception as error:  # no compiler toolchain / triton: report the other paths only
        print(f"[bench rq] {options} unavailable on {device}: {type(error).__name__}: {error}".splitlines()[0])
        return False


def run(device: str = "cpu", quick: bool = False) -> list[dict]:
    cuda = device.startswith("cuda")
    reps, ref_reps, clone_reps = (5, 1, 10) if quick else (15, 3, 30)
    # Opt-in paths, each reported as <name>_ms, ref/<name>, <name>/clone, <name>_met.
    variants = {"compiled": {"compile": True}}
    if cuda:
        variants["reduce_overhead"] = {"compile": "reduce-overhead"}
    variants = {name: options for name, options in variants.items() if _variant_works(device, **options)}
    rows = []
    for shape, channel_dim in CASES + (CUDA_EXTRA_CASES if cuda else []):
        torch.manual_seed(0)
        x = torch.randn(shape, device=device)
        tokens = channel_dim == -1
        x_ref = x.transpose(1, 2).unsqueeze(-1).contiguous() if tokens else x

        def ours(**options) -> torch.Tensor:
            return randomized_quantization(x, NUM_BINS, channel_dim, **options)

        def ref() -> torch.Tensor:
            return reference_quantize(x_ref, NUM_BINS, "random", "inside_random")

        ours_ms = _median_ms(ours, device, reps, warmup=2)
        clone_ms = _median_ms(x.clone, device, clone_reps, warmup=3)
        ref_ms = _median_ms(ref, device, ref_reps, warmup=1)
        input_mb = x.numel() * x.element_size() / 2**20
        ours_mb = _peak_extra_bytes(ours, device) / 2**20
        ref_mb = _peak_extra_bytes(ref, device) / 2**20

        head = x[:2]
        det_ours = randomized_quantization(head, NUM_BINS, channel_dim, "middle", "uniform")
        det_ref = reference_quantize(x_ref[:2], NUM_BINS, "uniform", "middle")
        if tokens:
            det_ref = det_ref.squeeze(-1).transpose(1, 2)
        exact = bool(torch.equal(det_ours, det_ref))

        def met(ms: float) -> bool:
            return ref_ms / ms >= 20 if cuda else ref_ms / ms >= 30 and ms / clone_ms <= 10

        row = {
            "shape": "x".join(map(str, shape)),
            "channel_dim": channel_dim,
            "ref_layout": "(B,D,T,1) = x.transpose(1,2).unsqueeze(-1)" if tokens else "(B,C,H,W) = x",
            "ours_ms": round(ours_ms, 3),
            "ref_ms": round(ref_ms, 2),
            "clone_ms": round(clone_ms, 3),
            "ref/ours": round(ref_ms / ours_ms, 1),
            "ours/clone": round(ours_ms / clone_ms, 1),
            "input_MB": round(input_mb, 1),
            "ours_peak_MB": round(ours_mb, 1),
            "ref_peak_MB": round(ref_mb, 1),
            "ours_peak/input": round(ours_mb / input_mb, 2),
            "ref_peak/input": round(ref_mb / input_mb, 2),
            "exact": exact,
            "target": CUDA_TARGET if cuda else CPU_TARGET,
            "met": met(ours_ms),
        }
        for name, options in variants.items():
            ours(**options)  # compile / capture (or load from the cache) outside the timing
            ms = _median_ms(lambda: ours(**options), device, reps, warmup=2)
            row.update(
                {
                    f"{name}_ms": round(ms, 3),
                    f"ref/{name}": round(ref_ms / ms, 1),
                    f"{name}/clone": round(ms / clone_ms, 1),
                    f"{name}_met": met(ms),
                }
            )
        rows.append(row)
        print(f"[bench rq] {row}", flush=True)
    return rows
