"""Randomized Quantization (RQ): a data-agnostic augmentation (Wu et al., ICCV 2023).

Each channel of each sample is quantized with its own random bins: the channel's
[min, max] range is cut at ``num_bins - 1`` points and every value is replaced by a
proxy value of its bin. The operator works on any rank >= 2 (batch first, channel
dimension chosen by ``channel_dim``), keeps shape and dtype, and needs memory linear
in the input (the output plus one buffer of the input's size, whatever ``num_bins``):
never a ``[N, num_bins, ...]`` membership mask.

Semantics follow the reference module (microsoft/random_quantize) so that the
deterministic mode (``spacing="uniform", collapse="middle"``) gives the same output:

* bin k covers ``[left_k, right_k)``; the last bin's right end is ``max + 1e-6``;
* ``middle`` uses ``(left_k + right_k) / 2``; ``inside_random`` draws one point per bin
  uniformly inside it; ``all_zeros`` replaces the sample by zeros (as the reference);
* with probability ``p`` per sample the quantized sample is used, else the input;
* random draws have the reference's order and shapes (cut fractions ``rand(N, bins - 1)``,
  then proxy fractions ``rand(N, bins)``, N = batch x channels), so one seed gives the
  reference's output.

Where this module goes beyond the reference (documented choices):

* proxies are clamped to the channel's ``[min, max]`` so the output never leaves the
  input's range (the reference can exceed ``max`` by < 1e-6 in degenerate channels);
* non-finite values (NaN, +-inf) pass through unchanged and are ignored by the
  channel statistics, so they never poison the finite values;
* float16 / bfloat16 inputs are processed in float32 and cast back;
* channels with huge magnitudes (``max(|min|, |max|)`` above a quarter of the dtype's
  maximum, where ``max - min`` or ``left + right`` would overflow) get their bins computed on
  the range scaled by 1/4 and scaled back; the reference would give inf cut points (all values
  in one bin) or NaN.

Edge-case contract (``tests/test_augment_edge_cases.py``):

* a constant channel (min == max, a single element included) comes back unchanged with
  ``inside_random`` and ``middle``; ``all_zeros`` turns it into zeros like any other channel;
* non-finite values come back unchanged; the finite values of their channel are quantized
  exactly as if the non-finite ones were absent (same statistics, same random draws); a
  channel without any finite value comes back unchanged;
* a finite input never gives a NaN or inf, whatever the setting or magnitude (1e30,
  subnormals, ranges that overflow the dtype), and every output lies in its channel's
  finite ``[min, max]`` (``all_zeros`` aside); the dtype is kept (float16 / bfloat16 too);
* an input without elements (batch 0 or any other size 0) and ``p == 0`` return the input
  itself (not a copy), after the arguments are checked;
* a non-contiguous input (transposed, strided, channels-last, expanded) gives what its
  contiguous copy gives under the same seed;
* bad arguments raise ``ValueError`` with a one-line message naming the bad value and the
  valid ones: ``num_bins`` not an integer >= 2, ``p`` not a number in [0, 1], an unknown
  ``collapse`` / ``spacing``, ``channel_dim`` not an integer indexing a non-batch dimension,
  an input of rank < 2 (a non-float input raises ``TypeError``). Integer-like values (numpy
  integers) are accepted for ``num_bins`` and ``channel_dim``.

How it is fast (``benchmarks/rq.py`` measures it): the input is viewed as [B, P, C, Q] with
the channels in dimension 2, so token embeddings [B, T, D] (``channel_dim=-1``) need no
transpose; the statistics are plain reductions and non-finite values are detected from them
alone (NaN propagates into min/max, infinities show up as one of them, huge magnitudes are
one comparison away), so the full-size masks exist only on the rare slow path; the sorted cut
points / proxies are [num_bins, B*C] vectors (a sorting network sorts the many short rows).
The bin lookup differs per device:

* CPU: walk up the sorted cuts, ``w = (x >= cut_j)`` then ``out.lerp_(proxy_{j+1}, w)``, two
  vectorised in-place passes per cut point (a lerp with weight 0 or 1 returns one of its ends
  exactly; ``torch.where`` and ``searchsorted`` are not vectorised on CPU);
* GPU: ``searchsorted`` + ``gather`` on (sample, channel) rows, two kernels in all (a GPU is
  bound by kernel launches here, not by memory traffic);
* ``compile=True`` (opt-in, either device): ``torch.compile`` fuses the statistics into one
  pass and the lookup into one read and one write of the input. Same output;
* ``cuda_graph=True`` (opt-in, CUDA): the whole operator is captured once per input shape and
  replayed as one CUDA graph, removing the per-kernel launch cost. Same output and random
  stream (best with ``compile=True`` too).
"""

from __future__ import annotations

import math
import operator
from collections import OrderedDict
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from dabs_rq.errors import UserError

COLLAPSE_MODES = ("inside_random", "middle", "all_zeros")
#: where the statistics and bins are taken: per (sample, channel), or per sample (all channels)
STATISTICS = ("channel", "instance")
SPACINGS = ("random", "uniform")
# Right end of the last bin, as in the reference implementation.
_LAST_BIN_MARGIN = 1e-6


def _as_int(value: object) -> Optional[int]:
    """``value`` as a Python int if it is an integer (int, numpy / torch integer scalar), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _validate_arguments(num_bins: object, collapse: object, spacing: object, p: object) -> int:
    """Checks the input-independent arguments; returns ``num_bins`` as an int."""
    bins = _as_int(num_bins)
    if bins is None or bins < 2:
        raise UserError(f"num_bins must be an integer >= 2, got {num_bins!r}")
    if not isinstance(collapse, str) or collapse not in COLLAPSE_MODES:
        raise UserError(f"collapse must be one of {', '.join(COLLAPSE_MODES)}; got {collapse!r}")
    if not isinstance(spacing, str) or spacing not in SPACINGS:
        raise UserError(f"spacing must be one of {', '.join(SPACINGS)}; got {spacing!r}")
    try:
        # a real number (not a bool or a string); NaN fails the comparison
        valid_p = not isinstance(p, (bool, str, bytes)) and 0.0 <= float(p) <= 1.0
    except (TypeError, ValueError):
        valid_p = False
    if not valid_p:
        raise UserError(f"p must be a number in [0, 1], got {p!r}")
    return bins


def _validate(
    x: Tensor, num_bins: object, channel_dim: object, collapse: object, spacing: object, p: object
) -> tuple[int, int]:
    """Checks all arguments; returns ``(channel dimension in 1..rank-1, num_bins)`` as ints."""
    bins = _validate_arguments(num_bins, collapse, spacing, p)
    if not isinstance(x, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(
            f"input must have rank >= 2 (batch, channels, ...), got rank {x.dim()} (shape {tuple(x.shape)})"
        )
    if not x.is_floating_point():
        raise TypeError(f"input must be a floating point tensor, got {x.dtype}")
    index = _as_int(channel_dim)
    dim = index % x.dim() if index is not None and -x.dim() <= index < x.dim() else None
    if dim is None or dim == 0:
        raise UserError(
            f"channel_dim must index a non-batch dimension of a rank-{x.dim()} input "
            f"(1..{x.dim() - 1} or -1..-{x.dim() - 1}), got {channel_dim!r}"
        )
    return dim, bins


def _finite_range(xv: Tensor, finite: Tensor) -> tuple[Tensor, Tensor]:
    """Per-(sample, channel) min and max over the finite values of ``xv`` [B, P, C, Q]; 0 where none."""
    lo = torch.where(finite, xv, torch.full_like(xv, float("inf"))).amin(dim=(1, 3))
    hi = torch.where(finite, xv, torch.full_like(xv, float("-inf"))).amax(dim=(1, 3))
    empty = ~torch.isfinite(lo)  # channels without any finite value
    return lo.masked_fill(empty, 0.0), hi.masked_fill(empty, 0.0)


def _merge_sort_pairs(n: int) -> list[tuple[int, int]]:
    """Comparators (i, j), i < j, of Batcher's odd-even merge sort network for ``n`` items."""
    size = 1 << max(0, (n - 1).bit_length())
    pairs, p = [], 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    a, b = i + j, i + j + k
                    if a // (2 * p) == b // (2 * p) and b < n:
                        pairs.append((a, b))
            k //= 2
        p *= 2
    return pairs


def _sorted_columns(values: Tensor) -> Tensor:
    """``values`` [N, n] sorted along dim 1, returned transposed: [n, N], contiguous.

    ``torch.sort`` pays a per-row cost (about 40 ns on CPU); with many rows and few columns a
    sorting network of vectorised min/max over whole columns is 2-3x faster. Same values.
    """
    n_rows, n = values.shape
    if values.device.type != "cpu" or n > 31 or n_rows < 2048:
        return values.sort(dim=1).values.t().contiguous()
    columns = list(values.t().unbind(0))
    for a, b in _merge_sort_pairs(n):
        columns[a], columns[b] = torch.minimum(columns[a], columns[b]), torch.maximum(columns[a], columns[b])
    return torch.stack(columns)


def _safe_rows(lo: Tensor, hi: Tensor) -> Tensor:
    """Rows whose bins the reference arithmetic computes without overflow: ``|lo|, |hi| <= max / 4``.

    Then ``hi - lo``, ``left + right`` (middle proxies) and ``u * (right - left)`` stay finite.
    False for NaN / inf statistics too. ``max(hi, -lo)`` is ``max(|lo|, |hi|)`` since ``hi >= lo``.
    """
    return torch.maximum(hi, lo.neg()) <= torch.finfo(lo.dtype).max / 4


def _bins(
    lo: Tensor,
    hi: Tensor,
    num_bins: int,
    collapse: str,
    spacing: str,
    generator: Optional[torch.Generator],
    bin_major: bool,
    guard: bool = False,
) -> tuple[Tensor, Tensor]:
    """Sorted cut points and clamped proxies of N rows (sample, channel) with finite range [lo, hi].

    ``bin_major``: shapes [num_bins - 1, N] and [num_bins, N] (each cut point / proxy is one
    contiguous vector over the rows, what the CPU lookup broadcasts); else [N, num_bins - 1] and
    [N, num_bins]. Bin k is [edges_k, edges_k+1) with edges = lo, the sorted cuts, hi + 1e-6.

    ``guard``: some rows may fail :func:`_safe_rows` (magnitudes above a quarter of the dtype's
    maximum). Their bins are computed on the range scaled by 1/4 (exact: a power of two) and
    scaled back, so ``hi - lo`` or ``left + right`` cannot overflow (an overflowing range would
    give inf cut points, and NaN where a fraction is exactly 0); the other rows keep the
    reference's arithmetic bit for bit. Same random draws either way.
    """
    n_rows, n_cuts = lo.shape[0], num_bins - 1
    draw = dict(device=lo.device, dtype=lo.dtype, generator=generator)
    axis = 0 if bin_major else 1
    lo_, hi_ = lo.unsqueeze(axis), hi.unsqueeze(axis)
    if spacing == "random":
        # Sorting the fractions sorts the cut points with identical values: v -> v * (hi - lo) + lo
        # is non-decreasing for hi >= lo, also after rounding.
        fractions = torch.rand(n_rows, n_cuts, **draw)
        fractions = _sorted_columns(fractions) if bin_major else fractions.sort(dim=1).values
    else:
        # The step is rounded to float32 first, as the reference computes it, so both agree bit for bit.
        step = float(torch.tensor(1.0) / num_bins)
        fractions = torch.arange(step, 1.0, step, device=lo.device, dtype=lo.dtype)[:n_cuts].unsqueeze(1 - axis)
    u = None
    if collapse != "middle":
        u = torch.rand(n_rows, num_bins, **draw)
        u = u.t() if bin_major else u

    def arithmetic(lo_: Tensor, hi_: Tensor, margin: float) -> tuple[Tensor, Tensor]:
        cuts = fractions * (hi_ - lo_) + lo_  # the reference's arithmetic (no fused multiply-add)
        edges = torch.cat([lo_, cuts, hi_ + margin], dim=axis)
        left, right = edges.narrow(axis, 0, num_bins), edges.narrow(axis, 1, num_bins)
        if u is None:
            return cuts, (left + right) / 2
        return cuts, (right - left).mul_(u).add_(left)  # left + u * (right - left)

    cuts, proxies = arithmetic(lo_, hi_, _LAST_BIN_MARGIN)
    if guard:
        unsafe = ~_safe_rows(lo_, hi_)
        scaled_cuts, scaled_proxies = arithmetic(lo_ * 0.25, hi_ * 0.25, _LAST_BIN_MARGIN * 0.25)
        cuts = torch.where(unsafe, scaled_cuts.mul_(4).clamp_(min=lo_, max=hi_), cuts)
        proxies = torch.where(unsafe, scaled_proxies.mul_(4), proxies)
    return cuts, proxies.clamp_(min=lo_, max=hi_)


def _select_lerp(xv: Tensor, cuts: Tensor, proxies: Tensor) -> Tensor:
    """Eager bin lookup: every value of ``xv`` [B, P, C, Q] becomes proxy k, k = #(cut points <= value).

    ``cuts`` [num_bins - 1, B, 1, C, 1] and ``proxies`` [num_bins, B, 1, C, 1] broadcast per
    (sample, channel). Going up the sorted cuts, a value that reaches cut j takes proxy j + 1.
    ``lerp(out, proxy, w)`` with w in {0, 1} returns exactly ``out`` or ``proxy`` as long as
    ``proxy - out`` is finite (true when the channel range ``max - min`` is finite), and unlike
    ``torch.where`` it is vectorised; each step is two in-place passes over preallocated buffers.
    """
    out = proxies[0].expand_as(xv).clone()
    weight = torch.empty_like(xv)
    for j in range(cuts.shape[0]):
        torch.ge(xv, cuts[j], out=weight)
        out.lerp_(proxies[j + 1], weight)
    return out


def _select_where(xv: Tensor, cuts: Tensor, proxies: Tensor) -> Tensor:
    """Same lookup as :func:`_select_lerp` with ``torch.where``: exact for any proxies (slower in eager).

    Non-finite values keep their input value. This is the function ``compile=True`` fuses into
    one pass over the input.
    """
    out = proxies[0].expand_as(xv)
    for j in range(cuts.shape[0]):
        out = torch.where(xv >= cuts[j], proxies[j + 1], out)
    return torch.where(torch.isfinite(xv), out, xv)


def _select_search(xv: Tensor, cuts: Tensor, proxies: Tensor) -> Tensor:
    """Accelerator lookup: ``searchsorted`` against each row's sorted cuts, then ``gather``.

    ``cuts`` [N, num_bins - 1], ``proxies`` [N, num_bins], rows N = (sample, channel). Two
    kernels instead of two per cut point: on a GPU this operator is bound by kernel launches and
    the extra memory traffic is cheap. Token layouts [B, T, C] are transposed to rows and back.
    Exact for any value (NaN lands in some bin; the caller restores non-finite values).
    """
    batch, before, channels, after = xv.shape
    rows = xv.transpose(1, 2).reshape(batch * channels, before * after)
    out = proxies.gather(1, torch.searchsorted(cuts, rows, right=True, out_int32=True))
    return out.view(batch, channels, before, after).transpose(1, 2)


def _range(xv: Tensor) -> tuple[Tensor, Tensor]:
    """Min and max of ``xv`` [B, P, C, Q] over P and Q, as two [B, C] tensors."""
    batch, before, channels, after = xv.shape
    if xv.device.type != "cpu":  # one kernel (on CPU, two vectorised reductions beat torch.aminmax)
        if before == 1:
            return torch.aminmax(xv.reshape(batch, channels, after), dim=2)
        if after == 1:
            return torch.aminmax(xv.reshape(batch, before, channels), dim=1)
    return xv.amin(dim=(1, 3)), xv.amax(dim=(1, 3))


_COMPILED: dict[str, Callable] = {}


def _compiled(name: str, fn: Callable) -> Callable:
    if name not in _COMPILED:
        # Static shapes: a training run sees one or two input shapes, and static kernels are faster
        # (constant index arithmetic); after 8 shapes dynamo falls back to eager (same output).
        _COMPILED[name] = torch.compile(fn, dynamic=False)
    return _COMPILED[name]


def _finite_range_of(xv: Tensor) -> tuple[Tensor, Tensor]:
    return _finite_range(xv, torch.isfinite(xv))


def _quantize(
    x: Tensor,
    dim: int,
    num_bins: int,
    collapse: str,
    spacing: str,
    p: float,
    generator: Optional[torch.Generator],
    compile: bool,
    sync_free: bool = False,
    applied: Optional[list] = None,
) -> Tensor:
    """The operator on a non-empty ``x`` with validated arguments and 0 < p <= 1.

    ``sync_free`` (for CUDA graph capture): no host synchronisation and no data-dependent
    branch, so the statistics always take the finite-values-only path (same values).
    ``applied``: if given and ``p < 1``, the [B] bool mask of quantized samples is appended to it.
    """
    shape = x.shape
    batch, before, channels, after = shape[0], math.prod(shape[1:dim]), shape[dim], math.prod(shape[dim + 1:])
    compute_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    # [B, P, C, Q]: a view of x when it is contiguous; statistics over P and Q, no transposes.
    xv = x.reshape(batch, before, channels, after).to(compute_dtype)
    finite, exact_select, guard = None, False, sync_free
    if compile:
        # Compiled code runs without autograd (the operator's gradient is zero almost everywhere),
        # which also keeps one compiled graph for both grad modes.
        with torch.no_grad():
            lo, hi = _compiled("finite_range", _finite_range_of)(xv) if sync_free else _compiled("range", _range)(xv)
    elif sync_free:
        finite = torch.isfinite(xv)
        lo, hi = _finite_range(xv, finite)
    else:
        lo, hi = _range(xv)
    lo, hi = lo.reshape(-1), hi.reshape(-1)
    if not sync_free:
        # NaN propagates into min and max, +-inf shows up as one of them: one check of the [B * C]
        # statistics instead of an isfinite pass over the input. It also catches magnitudes above
        # a quarter of the dtype's maximum, where the bins' arithmetic could overflow.
        if not bool(_safe_rows(lo, hi).all()):  # rare: non-finite values or huge magnitudes
            finite = torch.isfinite(xv)
            lo, hi = (t.view(-1) for t in _finite_range(xv, finite))
            # the lerp lookup needs a finite range (proxy differences) and finite values
            exact_select = not bool(finite.all()) or not bool(torch.isfinite(hi - lo).all())
            guard = not bool(_safe_rows(lo, hi).all())

    if collapse == "all_zeros":
        out = torch.zeros_like(xv)
        if finite is not None or sync_free:
            out = torch.where(torch.isfinite(xv) if finite is None else finite, out, xv)
    else:
        bin_major = compile or xv.device.type == "cpu"
        cuts, proxies = _bins(lo, hi, num_bins, collapse, spacing, generator, bin_major, guard)
        if not bin_major:
            out = _select_search(xv, cuts, proxies)
            if finite is not None or sync_free:
                out = torch.where(torch.isfinite(xv) if finite is None else finite, out, xv)
        else:
            cuts = cuts.view(num_bins - 1, batch, 1, channels, 1)
            proxies = proxies.view(num_bins, batch, 1, channels, 1)
            if compile:
                with torch.no_grad():
                    out = _compiled("select", _select_where)(xv, cuts, proxies)  # exact, non-finite pass through
            elif exact_select or sync_free:
                out = _select_where(xv, cuts, proxies)
            else:
                out = _select_lerp(xv, cuts, proxies)
    out = out.reshape(shape)
    if out.dtype != x.dtype:
        out = out.to(x.dtype)
    if p < 1:
        keep = torch.rand(batch, device=x.device, generator=generator) >= p
        if applied is not None:
            applied.append(~keep)
        if sync_free:
            out = torch.where(keep.view(batch, *([1] * (x.dim() - 1))), x, out)
        elif bool(keep.any()):
            out[keep] = x[keep]
    return out


class _GraphedQuantizer:
    """The operator for one input shape / dtype / setting, captured once in a CUDA graph.

    A call copies the input into the graph's static input, replays the graph (one launch
    instead of about twenty) and returns a clone of the static output. Random draws come from
    the default CUDA generator exactly as in eager mode: a replay reads the generator's current
    seed/offset and advances it by what the captured kernels draw.
    """

    def __init__(self, x: Tensor, run: Callable[[Tensor], Tensor]) -> None:
        device = x.device
        self.static_x = torch.empty(x.shape, dtype=x.dtype, device=device)
        self.static_x.copy_(x)
        rng_state = torch.cuda.get_rng_state(device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.no_grad():
            run(self.static_x)  # warm-up outside the capture (lazy workspaces, compiled kernels)
        torch.cuda.current_stream(device).wait_stream(side)
        torch.cuda.set_rng_state(rng_state, device)  # the warm-up draws do not count
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.static_out = run(self.static_x)

    def __call__(self, x: Tensor) -> Tensor:
        self.static_x.copy_(x)
        self.graph.replay()
        return self.static_out.clone()


_GRAPHS: "OrderedDict[tuple, _GraphedQuantizer]" = OrderedDict()
_MAX_GRAPHS = 8


def _graphed(x: Tensor, dim: int, num_bins: int, collapse: str, spacing: str, p: float, compile: bool) -> Tensor:
    key = (tuple(x.shape), x.dtype, x.device, dim, num_bins, collapse, spacing, float(p), compile)
    graphed = _GRAPHS.get(key)
    if graphed is None:
        graphed = _GraphedQuantizer(
            x, lambda static_x: _quantize(static_x, dim, num_bins, collapse, spacing, p, None, compile, sync_free=True)
        )
        _GRAPHS[key] = graphed
        while len(_GRAPHS) > _MAX_GRAPHS:
            _GRAPHS.popitem(last=False)
    else:
        _GRAPHS.move_to_end(key)
    return graphed(x)


def randomized_quantization(
    x: Tensor,
    num_bins: int = 8,
    channel_dim: int = 1,
    collapse: str = "inside_random",
    spacing: str = "random",
    p: float = 1.0,
    generator: Optional[torch.Generator] = None,
    compile: bool = False,
    cuda_graph: bool = False,
    statistics: str = "channel",
    *,
    return_applied: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Quantize every (sample, channel) of ``x`` with random bins; see the module docstring.

    Args:
        x: floating tensor of rank >= 2 with the batch in dimension 0.
        num_bins: number of bins per channel (>= 2).
        channel_dim: dimension holding the channels; statistics are taken per sample
            and per channel over all remaining dimensions.
        collapse: proxy value of a bin: ``inside_random``, ``middle`` or ``all_zeros``.
        spacing: ``random`` cut points (uniform draws inside [min, max]) or ``uniform``.
        p: probability, per sample, of applying the quantization.
        generator: optional ``torch.Generator`` (on ``x``'s device) for reproducible draws.
        compile: opt-in: fuse the statistics and the bin lookup with ``torch.compile`` (one pass
            each; needs a working compiler toolchain, compiles once per layout/dtype/num_bins).
            Same output as the eager path, without autograd history.
        cuda_graph: opt-in, CUDA inputs only (ignored elsewhere): capture the whole operator in
            a CUDA graph per input shape/dtype/setting (the last 8 are kept, each with a private
            memory pool of a few times the input) and replay it: one launch instead of ~20, which
            is what bounds this operator on a GPU. Same output and random stream as the eager
            path; needs ``generator=None`` (the default CUDA generator); the output carries no
            autograd history. Combine with ``compile=True`` for fused kernels inside the graph.
        statistics: ``channel`` (the paper's default): min, max and bins per sample and channel;
            ``instance`` (the paper's ablation): one min, max and set of bins per sample, shared
            by all its channels (the sample is quantized as if it were a single channel).
        return_applied: also return which samples were quantized: ``(output, applied)`` with
            ``applied`` a bool tensor [batch] on ``x``'s device, True where the sample's output is
            its quantization, False where the ``p`` draw returned the input (all True for ``p == 1``,
            all False for ``p == 0`` or an input without elements). Same draws and output as without
            it; with ``cuda_graph`` and ``p < 1`` the call runs eagerly (same output and random stream).
    """
    if statistics not in STATISTICS:
        raise UserError(f"statistics must be one of {', '.join(STATISTICS)}; got {statistics!r}")
    if statistics == "instance" and x.dim() >= 2 and x.numel() > 0:
        flat = x.reshape(x.shape[0], 1, -1)
        result = randomized_quantization(flat, num_bins, 1, collapse, spacing, p, generator, compile,
                                         cuda_graph, return_applied=return_applied)
        if return_applied:
            return result[0].reshape(x.shape), result[1]
        return result.reshape(x.shape)
    dim, num_bins = _validate(x, num_bins, channel_dim, collapse, spacing, p)
    p = float(p)

    def answer(out: Tensor, mask: Optional[Tensor] = None, value: bool = True):
        if not return_applied:
            return out
        return out, mask if mask is not None else torch.full((x.shape[0],), value, dtype=torch.bool, device=x.device)

    if x.numel() == 0 or p == 0:
        return answer(x, value=False)
    if cuda_graph and x.is_cuda:
        if generator is not None:
            raise ValueError("cuda_graph=True draws from the default CUDA generator; pass generator=None")
        if not (return_applied and p < 1):
            return answer(_graphed(x, dim, num_bins, collapse, spacing, p, compile))
    applied: Optional[list] = [] if return_applied and p < 1 else None
    out = _quantize(x, dim, num_bins, collapse, spacing, p, generator, compile, applied=applied)
    return answer(out, applied[0] if applied else None)


class RandomizedQuantization(nn.Module):
    """``nn.Module`` form of :func:`randomized_quantization` (a view-generating augmentation)."""

    def __init__(
        self,
        num_bins: int = 8,
        channel_dim: int = 1,
        collapse: str = "inside_random",
        spacing: str = "random",
        p: float = 1.0,
        generator: Optional[torch.Generator] = None,
        compile: bool = False,
        cuda_graph: bool = False,
        statistics: str = "channel",
    ) -> None:
        super().__init__()
        if statistics not in STATISTICS:
            raise UserError(f"statistics must be one of {', '.join(STATISTICS)}; got {statistics!r}")
        self.statistics = statistics
        # Validate eagerly so a bad config fails before any work starts (channel_dim as far as it
        # can be without the input's rank: an integer, not the batch dimension 0).
        _validate_arguments(num_bins, collapse, spacing, p)
        if _as_int(channel_dim) is None or _as_int(channel_dim) == 0:
            raise UserError(
                f"channel_dim must be a non-zero integer (dimension 0 is the batch), got {channel_dim!r}"
            )
        self.num_bins = num_bins
        self.channel_dim = channel_dim
        self.collapse = collapse
        self.spacing = spacing
        self.p = p
        self.generator = generator
        self.compile = compile
        self.cuda_graph = cuda_graph

    def forward(self, x: Tensor) -> Tensor:
        return randomized_quantization(
            x, self.num_bins, self.channel_dim, self.collapse, self.spacing, self.p, self.generator, self.compile,
            self.cuda_graph, self.statistics,
        )

    def forward_with_applied(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(forward(x), applied)``: the same draws and output, and the [batch] bool mask of the samples
        that were quantized (False where the ``p`` draw kept the input); see ``return_applied``."""
        return randomized_quantization(
            x, self.num_bins, self.channel_dim, self.collapse, self.spacing, self.p, self.generator, self.compile,
            self.cuda_graph, self.statistics, return_applied=True,
        )

    def extra_repr(self) -> str:
        return (
            f"num_bins={self.num_bins}, channel_dim={self.channel_dim}, collapse={self.collapse!r}, "
            f"spacing={self.spacing!r}, p={self.p}, statistics={self.statistics!r}"
            + (", compile=True" if self.compile else "")
            + (", cuda_graph=True" if self.cuda_graph else "")
        )
