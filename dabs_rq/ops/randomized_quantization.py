"""Randomized quantization (RQ), a data-agnostic augmentation (Wu et al., ICCV 2023).

Every channel of every sample is quantized with its own random bins: the channel's [min, max]
is cut at ``num_bins - 1`` points and each value is replaced by a proxy value of its bin. The
operator takes any rank >= 2 (batch first, channels in ``channel_dim``), keeps shape and dtype,
and needs memory linear in the input (output plus one buffer of the input's size), never the
reference's ``[N, num_bins, ...]`` membership mask.

Same semantics and random draws as the reference module (microsoft/random_quantize), so one
seed gives the reference's output: bin k is ``[left_k, right_k)`` and the last bin ends at
``max + 1e-6``; ``middle`` proxies are ``(left + right) / 2``, ``inside_random`` ones
``left + u * (right - left)``; ``all_zeros`` gives zeros; with probability ``p`` per sample the
quantized sample is used, else the input. Draws, in order: cut fractions ``rand(N, bins - 1)``
(``spacing="random"``, also for ``all_zeros``), proxy fractions ``rand(N, bins)``
(``inside_random``), then ``rand(B)`` for ``p < 1``; N = batch x channels.

Beyond the reference (documented choices, tested in ``tests/test_augment_edge_cases.py``):

* proxies are clamped to the channel's [min, max], so no output leaves the input's range (the
  reference can pass ``max`` by < 1e-6);
* non-finite values (NaN, +-inf) come back unchanged and are left out of the statistics: the
  finite values are quantized as if they were absent; a channel with no finite value is kept;
* a constant channel comes back unchanged (except under ``all_zeros``);
* float16 / bfloat16 are computed in float32 and cast back;
* channels with magnitudes above a quarter of the dtype's maximum get their bins computed on the
  range scaled by 1/4 and scaled back (exact: a power of two), where the reference's
  ``max - min`` or ``left + right`` would overflow to inf or NaN;
* an empty input or ``p == 0`` returns the input itself; bad arguments raise ``ValueError``
  naming the bad value and the valid ones (a non-float input raises ``TypeError``).

How it runs: :func:`_draws` makes all random draws first (they do not depend on the data), then
:func:`_quantize` computes the output. The cheap min / max of each channel tell whether the
input needs care (NaN propagates into them, infinities and huge magnitudes show): usually not,
and the bin lookup walks up the sorted cut points, ``out.lerp_(proxy, x >= cut)`` per cut (a
lerp with weight 0 or 1 returns one of its ends exactly; on CPU it is 4-6x faster than
``torch.where`` or ``searchsorted``). Otherwise (the careful path) the statistics skip
non-finite values and the lookup uses ``torch.where``, exact for any proxies. ``compile=True``
(or a ``torch.compile`` mode such as ``"reduce-overhead"``: CUDA graphs) runs :func:`_quantize`
through ``torch.compile``, always on the careful path (no data-dependent branch; fused, it
costs little); the draws stay eager, so the output is the eager one. ``compile="auto"`` is
resolved at each call from the input's device: :data:`AUTO_COMPILE_CUDA` on CUDA, eager on a CPU.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from dabs_rq.compile_setting import check_compile, compile_mode, resolve_compile
from dabs_rq.errors import UserError

COLLAPSE_MODES = ("inside_random", "middle", "all_zeros")
SPACINGS = ("random", "uniform")
#: where statistics and bins are taken: per (sample, channel), or per sample (the paper's ablation)
STATISTICS = ("channel", "instance")
_LAST_BIN_MARGIN = 1e-6  # right end of the last bin: max + 1e-6, as in the reference
#: What ``compile="auto"`` runs with on CUDA: CUDA graphs. On an H100 (results/bench/rq-cuda.json) one
#: [64, 197, 256] call took 0.60 ms eager, 0.92 ms compiled in the default mode (launch-bound: compiling alone
#: made it slower) and 0.18 ms compiled with ``reduce-overhead``. The output is cloned (see :func:`_compiled`).
AUTO_COMPILE_CUDA: bool | str = "reduce-overhead"


def _as_int(value: object) -> int | None:
    """``value`` as an int if it is an integer (int, numpy / torch integer scalar; not a bool), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _check_settings(num_bins: object, collapse: object, spacing: object, p: object, statistics: object) -> int:
    """Checks the input-independent arguments; returns ``num_bins`` as an int."""
    bins = _as_int(num_bins)
    if bins is None or bins < 2:
        raise UserError(f"num_bins must be an integer >= 2, got {num_bins!r}")
    for name, value, valid in (
        ("collapse", collapse, COLLAPSE_MODES),
        ("spacing", spacing, SPACINGS),
        ("statistics", statistics, STATISTICS),
    ):
        if not isinstance(value, str) or value not in valid:
            raise UserError(f"{name} must be one of {', '.join(valid)}; got {value!r}")
    try:  # a real number (not a bool or a string); NaN fails the comparison
        valid_p = not isinstance(p, (bool, str, bytes)) and 0.0 <= float(p) <= 1.0
    except (TypeError, ValueError):
        valid_p = False
    if not valid_p:
        raise UserError(f"p must be a number in [0, 1], got {p!r}")
    return bins


def _check_input(x: Tensor, channel_dim: object) -> int:
    """Checks the input and ``channel_dim``; returns the channel dimension in 1..rank-1."""
    if not isinstance(x, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise UserError(
            f"input must have rank >= 2 (batch, channels, ...), got rank {x.dim()} (shape {tuple(x.shape)})"
        )
    if not x.is_floating_point():
        raise TypeError(f"input must be a floating point tensor, got {x.dtype}")
    index = _as_int(channel_dim)
    if index is None or not -x.dim() <= index < x.dim() or index % x.dim() == 0:
        raise UserError(
            f"channel_dim must index a non-batch dimension of a rank-{x.dim()} input "
            f"(1..{x.dim() - 1} or -1..-{x.dim() - 1}), got {channel_dim!r}"
        )
    return index % x.dim()


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _draws(
    x: Tensor,
    view: tuple[int, int, int, int],
    num_bins: int,
    collapse: str,
    spacing: str,
    p: float,
    generator: torch.Generator | None,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """All random draws of one call, in the reference's order (they do not depend on the data).

    Cut fractions [N, num_bins - 1] (``random`` spacing, also under ``all_zeros``, as the
    reference), proxy fractions [N, num_bins] (``inside_random``), then the [batch] mask of the
    samples to quantize (``p < 1``); None where a setting draws nothing. N = batch x channels.
    """
    rows = view[0] * view[2]
    draw = dict(device=x.device, dtype=_compute_dtype(x.dtype), generator=generator)
    cut = torch.rand(rows, num_bins - 1, **draw) if spacing == "random" else None
    proxy = torch.rand(rows, num_bins, **draw) if collapse == "inside_random" else None
    applied = torch.rand(x.shape[0], device=x.device, generator=generator) < p if p < 1 else None
    return cut, proxy, applied


def _bins(
    lo: Tensor, hi: Tensor, num_bins: int, cut_fractions: Tensor | None, proxy_fractions: Tensor | None, guard: bool
) -> tuple[Tensor, Tensor]:
    """Sorted cut points [N, num_bins - 1] and clamped proxies [N, num_bins] of N rows with range [lo, hi].

    ``cut_fractions`` None: uniform spacing; ``proxy_fractions`` None: bin middles. The
    reference's arithmetic, bit for bit, except with ``guard`` in rows with a magnitude above a
    quarter of the dtype's maximum: there it runs on the range scaled by 1/4, then scaled back.
    """
    lo, hi = lo.unsqueeze(1), hi.unsqueeze(1)
    if cut_fractions is not None:
        # Sorting the fractions sorts the cut points: v -> v * (hi - lo) + lo is monotone, also rounded.
        fractions = cut_fractions.sort(dim=1).values
    else:  # the step is rounded to float32 first, as the reference computes it
        step = float(torch.tensor(1.0) / num_bins)
        fractions = torch.arange(step, 1.0, step, device=lo.device, dtype=lo.dtype)[: num_bins - 1]
    u = proxy_fractions

    def arithmetic(lo: Tensor, hi: Tensor, margin: float) -> tuple[Tensor, Tensor]:
        cuts = fractions * (hi - lo) + lo
        edges = torch.cat([lo, cuts, hi + margin], dim=1)
        left, right = edges[:, :-1], edges[:, 1:]
        return cuts, (left + right) / 2 if u is None else (right - left) * u + left

    cuts, proxies = arithmetic(lo, hi, _LAST_BIN_MARGIN)
    if guard:
        huge = torch.maximum(hi, -lo) > torch.finfo(lo.dtype).max / 4
        cuts_4, proxies_4 = arithmetic(lo * 0.25, hi * 0.25, _LAST_BIN_MARGIN * 0.25)
        cuts = torch.where(huge, (cuts_4 * 4).clamp(lo, hi), cuts)
        proxies = torch.where(huge, proxies_4 * 4, proxies)
    return cuts, proxies.clamp(lo, hi)


def _lookup(xv: Tensor, cuts: Tensor, proxies: Tensor, exact: bool) -> Tensor:
    """Every value of ``xv`` [B, P, C, Q] replaced by proxy k of its (sample, channel), k = #(cuts <= value).

    ``cuts`` [num_bins - 1, B, 1, C, 1] (sorted along dim 0) and ``proxies`` [num_bins, B, 1, C, 1]:
    walking up the cuts, a value that reaches cut j takes proxy j + 1. ``exact=False``: in place,
    ``out.lerp_(proxy, x >= cut)`` (weight 0 or 1 returns one end exactly when the proxies'
    differences are finite); ``exact=True``: ``torch.where``, exact for any proxies.
    """
    out = proxies[0].expand_as(xv).clone()
    weight = None if exact else torch.empty_like(xv)
    for cut, proxy in zip(cuts, proxies[1:]):
        if exact:
            out = torch.where(xv >= cut, proxy, out)
        else:
            out.lerp_(proxy, torch.ge(xv, cut, out=weight))
    return out


def _quantize(
    x: Tensor,
    view: tuple[int, int, int, int],
    num_bins: int,
    collapse: str,
    cut_fractions: Tensor | None,
    proxy_fractions: Tensor | None,
    applied: Tensor | None,
) -> Tensor:
    """RQ of a non-empty ``x`` with checked arguments and the draws of :func:`_draws`.

    ``view`` = (batch, P, channels, Q): ``x`` seen as [B, P, C, Q] with the statistics over P and
    Q (a view of ``x`` when it is contiguous: token embeddings [B, T, D] need no transpose).
    """
    xv = x.reshape(view).to(_compute_dtype(x.dtype))
    batch, _, channels, _ = view
    lo, hi = xv.amin(dim=(1, 3)), xv.amax(dim=(1, 3))
    # Careful path: non-finite values or magnitudes near overflow (rare), and always under torch.compile.
    careful = torch.compiler.is_compiling() or not bool((torch.maximum(hi, -lo) <= torch.finfo(lo.dtype).max / 4).all())
    if careful:
        finite = torch.isfinite(xv)
        lo = torch.where(finite, xv, float("inf")).amin(dim=(1, 3))
        hi = torch.where(finite, xv, float("-inf")).amax(dim=(1, 3))
        no_finite = ~torch.isfinite(lo)
        lo, hi = lo.masked_fill(no_finite, 0.0), hi.masked_fill(no_finite, 0.0)
    if collapse == "all_zeros":
        out = torch.zeros_like(xv)
    else:
        cuts, proxies = _bins(lo.view(-1), hi.view(-1), num_bins, cut_fractions, proxy_fractions, careful)
        # bin-major: cut j / proxy k as one contiguous [B, 1, C, 1] tensor broadcast over the input
        # (contiguous, so that the passes over the input are vectorised: 5-10x faster on CPU)
        cuts = cuts.t().contiguous().view(num_bins - 1, batch, 1, channels, 1)
        proxies = proxies.t().contiguous().view(num_bins, batch, 1, channels, 1)
        out = _lookup(xv, cuts, proxies, exact=careful)
    if careful:
        out = torch.where(finite, out, xv)
    out = out.reshape(x.shape).to(x.dtype)
    if applied is not None:
        out = torch.where(applied.view(batch, *[1] * (x.dim() - 1)), out, x)
    return out


_COMPILED: dict[bool | str, Callable] = {}


def _compiled(mode: bool | str) -> Callable:
    """``_quantize`` through ``torch.compile`` (``mode``: True or a mode name), built once per mode.

    Static shapes: a training run sees one or two input shapes (after 8, dynamo runs eagerly).
    Compiled code runs without autograd (the operator's gradient is zero almost everywhere).
    """
    if mode not in _COMPILED:
        mode_name = compile_mode(mode)
        compiled = torch.compile(_quantize, dynamic=False, mode=mode_name)
        cuda_graphs = torch._inductor.list_mode_options(mode_name or "default").get("triton.cudagraphs", False)

        @torch.no_grad()
        def run(x: Tensor, *args) -> Tensor:
            out = compiled(x, *args)
            return out.clone() if cuda_graphs and x.is_cuda else out  # the next replay overwrites a graph's output

        _COMPILED[mode] = run
    return _COMPILED[mode]


def randomized_quantization(
    x: Tensor,
    num_bins: int = 8,
    channel_dim: int = 1,
    collapse: str = "inside_random",
    spacing: str = "random",
    p: float = 1.0,
    generator: torch.Generator | None = None,
    compile: bool | str = False,
    statistics: str = "channel",
    *,
    return_applied: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Quantize every (sample, channel) of ``x`` with random bins; see the module docstring.

    Args:
        x: floating tensor of rank >= 2, batch in dimension 0.
        num_bins: bins per channel (>= 2).
        channel_dim: dimension of the channels; statistics per sample and channel over the others.
        collapse: proxy value of a bin: ``inside_random``, ``middle`` or ``all_zeros``.
        spacing: ``random`` cut points (uniform draws inside [min, max]) or ``uniform``.
        p: probability, per sample, of applying the quantization.
        generator: optional ``torch.Generator`` (on ``x``'s device) for reproducible draws.
        compile: ``torch.compile``: ``True`` or a mode (``"reduce-overhead"``: CUDA graphs,
            one launch instead of ~20, what bounds this operator on a GPU), or ``"auto"``
            (:data:`AUTO_COMPILE_CUDA` for a CUDA input, eager on a CPU). Same output and draws;
            compiles once per input shape and setting; no autograd history.
        statistics: ``channel`` (the paper's default) or ``instance``: one min, max and set of
            bins per sample, shared by its channels (the sample quantized as one channel).
        return_applied: also return the [batch] bool mask of the samples that were quantized
            (False where the ``p`` draw kept the input, all False for ``p == 0`` or an empty input).
    """
    num_bins = _check_settings(num_bins, collapse, spacing, p, statistics)
    dim, shape, p = _check_input(x, channel_dim), x.shape, float(p)
    if x.numel() == 0 or p == 0:
        out, applied = x, torch.zeros(shape[0], dtype=torch.bool, device=x.device)
    else:
        if statistics == "instance":
            view = (shape[0], 1, 1, math.prod(shape[1:]))
        else:
            view = (shape[0], math.prod(shape[1:dim]), shape[dim], math.prod(shape[dim + 1 :]))
        cut_fractions, proxy_fractions, applied = _draws(x, view, num_bins, collapse, spacing, p, generator)
        mode = resolve_compile(check_compile(compile), x.device, AUTO_COMPILE_CUDA)
        quantize = _compiled(mode) if mode else _quantize
        out = quantize(x, view, num_bins, collapse, cut_fractions, proxy_fractions, applied)
    if not return_applied:
        return out
    return out, applied if applied is not None else torch.ones(shape[0], dtype=torch.bool, device=x.device)


class RandomizedQuantization(nn.Module):
    """``nn.Module`` form of :func:`randomized_quantization` (a view-generating augmentation).

    The settings are checked when the module is built, so a bad config fails before any work
    (``channel_dim`` as far as possible without an input: a non-zero integer).
    """

    def __init__(
        self,
        num_bins: int = 8,
        channel_dim: int = 1,
        collapse: str = "inside_random",
        spacing: str = "random",
        p: float = 1.0,
        generator: torch.Generator | None = None,
        compile: bool | str = False,
        statistics: str = "channel",
    ) -> None:
        super().__init__()
        _check_settings(num_bins, collapse, spacing, p, statistics)
        check_compile(compile)
        if _as_int(channel_dim) in (None, 0):
            raise UserError(f"channel_dim must be a non-zero integer (dimension 0 is the batch), got {channel_dim!r}")
        self.num_bins, self.channel_dim, self.collapse, self.spacing = num_bins, channel_dim, collapse, spacing
        self.p, self.generator, self.compile, self.statistics = p, generator, compile, statistics

    def forward(self, x: Tensor) -> Tensor:
        return self._quantize(x, return_applied=False)

    def forward_with_applied(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(forward(x), applied)``: the same draws and output, and the [batch] bool mask of the
        samples that were quantized (False where the ``p`` draw kept the input)."""
        return self._quantize(x, return_applied=True)

    def _quantize(self, x: Tensor, return_applied: bool) -> Any:
        return randomized_quantization(
            x,
            self.num_bins,
            self.channel_dim,
            self.collapse,
            self.spacing,
            self.p,
            self.generator,
            self.compile,
            self.statistics,
            return_applied=return_applied,
        )

    def extra_repr(self) -> str:
        return (
            f"num_bins={self.num_bins}, channel_dim={self.channel_dim}, collapse={self.collapse!r}, "
            f"spacing={self.spacing!r}, p={self.p}, statistics={self.statistics!r}"
            + (f", compile={self.compile!r}" if self.compile else "")
        )
