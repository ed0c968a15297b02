"""Randomized Quantization (RQ): a data-agnostic augmentation (Wu et al., ICCV 2023).

Each channel of each sample is quantized with its own random bins: the channel's
[min, max] range is cut at ``num_bins - 1`` points and every value is replaced by a
proxy value of its bin. The operator works on any rank >= 2 (batch first, channel
dimension chosen by ``channel_dim``), keeps shape and dtype, and needs memory linear
in the input: bin indices come from ``torch.searchsorted`` against each row's sorted
cut points, never from a ``[N, num_bins, ...]`` membership mask.

Semantics follow the reference module (microsoft/random_quantize) so that the
deterministic mode (``spacing="uniform", collapse="middle"``) gives the same output:

* bin k covers ``[left_k, right_k)``; the last bin's right end is ``max + 1e-6``;
* ``middle`` uses ``(left_k + right_k) / 2``; ``inside_random`` draws one point per bin
  uniformly inside it; ``all_zeros`` replaces the sample by zeros (as the reference);
* with probability ``p`` per sample the quantized sample is used, else the input.

Where this module goes beyond the reference (documented choices):

* proxies are clamped to the channel's ``[min, max]`` so the output never leaves the
  input's range (the reference can exceed ``max`` by < 1e-6 in degenerate channels);
* non-finite values (NaN, +-inf) pass through unchanged and are ignored by the
  channel statistics, so they never poison the finite values;
* float16 / bfloat16 inputs are processed in float32 and cast back.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

COLLAPSE_MODES = ("inside_random", "middle", "all_zeros")
SPACINGS = ("random", "uniform")
# Right end of the last bin, as in the reference implementation.
_LAST_BIN_MARGIN = 1e-6


def _validate(x: Tensor, num_bins: int, channel_dim: int, collapse: str, spacing: str, p: float) -> int:
    if not isinstance(num_bins, int) or isinstance(num_bins, bool) or num_bins < 2:
        raise ValueError(f"num_bins must be an integer >= 2, got {num_bins!r}")
    if collapse not in COLLAPSE_MODES:
        raise ValueError(f"collapse must be one of {', '.join(COLLAPSE_MODES)}; got {collapse!r}")
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}; got {spacing!r}")
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p!r}")
    if x.dim() < 2:
        raise ValueError(f"input must have rank >= 2 (batch, channels, ...), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"input must be a floating point tensor, got {x.dtype}")
    dim = channel_dim % x.dim() if -x.dim() <= channel_dim < x.dim() else None
    if dim is None or dim == 0:
        raise ValueError(
            f"channel_dim must index a non-batch dimension of a rank-{x.dim()} input "
            f"(1..{x.dim() - 1} or -1..-{x.dim() - 1}), got {channel_dim}"
        )
    return dim


def _channel_range(rows: Tensor) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Per-row min and max over finite values; the finite mask if any value is not finite."""
    finite = torch.isfinite(rows)
    if bool(finite.all()):
        return rows.amin(dim=1), rows.amax(dim=1), None
    lo = torch.where(finite, rows, torch.full_like(rows, float("inf"))).amin(dim=1)
    hi = torch.where(finite, rows, torch.full_like(rows, float("-inf"))).amax(dim=1)
    empty = ~torch.isfinite(lo)  # rows without any finite value
    lo = torch.where(empty, torch.zeros_like(lo), lo)
    hi = torch.where(empty, torch.zeros_like(hi), hi)
    return lo, hi, finite


def randomized_quantization(
    x: Tensor,
    num_bins: int = 8,
    channel_dim: int = 1,
    collapse: str = "inside_random",
    spacing: str = "random",
    p: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
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
    """
    dim = _validate(x, num_bins, channel_dim, collapse, spacing, p)
    if x.numel() == 0 or p == 0:
        return x
    batch, channels = x.shape[0], x.shape[dim]
    compute_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    moved = x.movedim(dim, 1)
    rows = moved.reshape(batch * channels, -1).to(compute_dtype)
    n_rows = rows.shape[0]
    lo, hi, finite = _channel_range(rows)

    if collapse == "all_zeros":
        quantized = torch.zeros_like(rows)
    else:
        n_cuts = num_bins - 1
        draw = dict(device=x.device, dtype=compute_dtype, generator=generator)
        if spacing == "random":
            fractions = torch.rand(n_rows, n_cuts, **draw)
        else:
            # The step is rounded to float32 first, as the reference computes it, so both agree bit for bit.
            step = float(torch.tensor(1.0) / num_bins)
            fractions = torch.arange(step, 1.0, step, device=x.device, dtype=compute_dtype)[:n_cuts]
            fractions = fractions.expand(n_rows, n_cuts)
        cuts = (fractions * (hi - lo).unsqueeze(1) + lo.unsqueeze(1)).sort(dim=1).values
        left = torch.cat([lo.unsqueeze(1), cuts], dim=1)
        right = torch.cat([cuts, (hi + _LAST_BIN_MARGIN).unsqueeze(1)], dim=1)
        if collapse == "middle":
            proxies = (left + right) / 2
        else:
            proxies = left + torch.rand(n_rows, num_bins, **draw) * (right - left)
        proxies = torch.minimum(torch.maximum(proxies, lo.unsqueeze(1)), hi.unsqueeze(1))
        # Bin index = number of cut points <= value (bins are [left, right)).
        bin_index = torch.searchsorted(cuts, rows.contiguous(), right=True)
        quantized = proxies.gather(1, bin_index)

    if finite is not None:
        quantized = torch.where(finite, quantized, rows)
    out = quantized.reshape(moved.shape).movedim(1, dim).to(x.dtype)
    if p < 1:
        apply = torch.rand(batch, device=x.device, generator=generator) < p
        out = torch.where(apply.view(batch, *([1] * (x.dim() - 1))), out, x)
    return out


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
    ) -> None:
        super().__init__()
        # Validate eagerly so a bad config fails before any work starts.
        _validate(torch.zeros(1, 1), num_bins, 1, collapse, spacing, p)
        self.num_bins = num_bins
        self.channel_dim = channel_dim
        self.collapse = collapse
        self.spacing = spacing
        self.p = p
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        return randomized_quantization(
            x, self.num_bins, self.channel_dim, self.collapse, self.spacing, self.p, self.generator
        )

    def extra_repr(self) -> str:
        return (
            f"num_bins={self.num_bins}, channel_dim={self.channel_dim}, collapse={self.collapse!r}, "
            f"spacing={self.spacing!r}, p={self.p}"
        )
